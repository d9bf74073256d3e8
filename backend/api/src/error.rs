//! The one error type every handler returns, and extractor wrappers that
//! turn axum's plain-text rejections into the same JSON error body.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use picket_store::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why an API request failed.
///
/// Client mistakes become 4xx responses whose JSON body names what was wrong:
/// `{"error": "<message>", "code": "<machine code>"}`. Internal failures
/// become a plain 500 (`{"error": "internal error", "code": "internal"}`)
/// and the cause is logged, never sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed: bad JSON, bad parameter, bad value (400).
    #[error("{0}")]
    BadRequest(String),
    /// No valid session or credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (403); `code` says why
    /// (`forbidden`, `csrf`, `account_disabled`).
    #[error("{message}")]
    Forbidden {
        /// Machine-readable reason.
        code: &'static str,
        /// What the user needs.
        message: String,
    },
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The method is not allowed on this path (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the route accepts (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body has the wrong content type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An HTTP upgrade the request cannot do (426), e.g. the WebSocket
    /// stream requested without upgrade headers.
    #[error("{0}")]
    UpgradeRequired(String),
    /// A dependency is not ready (503).
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed; logged, answered with a plain 500.
    #[error("storage error: {0}")]
    Store(#[source] StoreError),
    /// Anything else internal; logged, answered with a plain 500.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
}

impl ApiError {
    /// The HTTP status this error is answered with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `code` of the JSON body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden { code, .. } => code,
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UpgradeRequired(_) => "upgrade_required",
            Self::Unavailable(_) => "unavailable",
            Self::Store(_) | Self::Internal(_) => "internal",
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    pub(crate) fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden {
            code: "forbidden",
            message: msg.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::NotFound(e.to_string()),
            StoreError::Conflict { .. } => Self::Conflict(e.to_string()),
            other => Self::Store(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "API request failed");
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        let body = ErrorBody {
            error: &message,
            code: self.code(),
        };
        (status, axum::Json(body)).into_response()
    }
}

fn from_status(status: StatusCode, message: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(message),
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(message),
        StatusCode::UPGRADE_REQUIRED => ApiError::UpgradeRequired(message),
        s if s.is_server_error() => ApiError::Internal(message),
        _ => ApiError::BadRequest(message),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        from_status(r.status(), format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        from_status(
            r.status(),
            format!("invalid query parameters: {}", r.body_text()),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        from_status(r.status(), format!("invalid path: {}", r.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        from_status(r.status(), format!("invalid body: {}", r.body_text()))
    }
}

/// `axum::Json` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

/// `axum::extract::Path` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}
