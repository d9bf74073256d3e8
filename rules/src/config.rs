//! Engine configuration: placeholder values and field mappings.

use std::collections::HashMap;

use crate::rule::RuleLogSource;

/// How rules are adapted to the events of one deployment.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Values of `expand` placeholders, by name without the `%` signs
    /// (`Administrators` → `["admin*", "root"]`). Values are Sigma strings:
    /// they may use wildcards. A rule using a placeholder missing here is
    /// rejected with [`crate::ErrorKind::UnconfiguredPlaceholder`].
    pub placeholders: HashMap<String, Vec<String>>,
    /// Field renames applied to rules at load time, for rules whose logsource
    /// matches. All matching mappings apply, later ones winning.
    pub field_mappings: Vec<FieldMapping>,
    /// Skip the literal prefilter and evaluate every routed rule on every
    /// event. Results are the same; this exists to test exactly that.
    pub no_prefilter: bool,
}

impl EngineConfig {
    /// No placeholders, no mappings: rule field names are event field names
    /// (right for the Linux sensor, which emits Sysmon-for-Linux names, and
    /// for normalized EVTX records).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the values of one placeholder.
    #[must_use]
    pub fn with_placeholder<I, S>(mut self, name: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.placeholders.insert(
            name.to_owned(),
            values.into_iter().map(Into::into).collect(),
        );
        self
    }

    /// Adds a field mapping.
    #[must_use]
    pub fn with_field_mapping(mut self, mapping: FieldMapping) -> Self {
        self.field_mappings.push(mapping);
        self
    }

    pub(crate) fn mapping_for(&self, ls: &RuleLogSource) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for m in &self.field_mappings {
            if m.applies_to(ls) {
                out.extend(m.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }
}

/// Renames rule fields to event fields for the rules of some logsources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldMapping {
    /// Which rules: each field that is set must equal the rule's.
    pub selector: RuleLogSource,
    /// Rule field name → event field name.
    pub fields: HashMap<String, String>,
}

impl FieldMapping {
    /// A mapping for the rules whose logsource matches `selector`.
    #[must_use]
    pub fn new<I, K, V>(selector: RuleLogSource, fields: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        FieldMapping {
            selector,
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    fn applies_to(&self, ls: &RuleLogSource) -> bool {
        let ok = |sel: &Option<String>, rule: &Option<String>| sel.is_none() || sel == rule;
        ok(&self.selector.product, &ls.product)
            && ok(&self.selector.category, &ls.category)
            && ok(&self.selector.service, &ls.service)
    }

    /// Sigma's generic process/file/network field names for macOS rules,
    /// mapped to the Elastic Common Schema fields of the macOS dataset
    /// ([`MACOS_ECS_FIELDS`]).
    #[must_use]
    pub fn macos_ecs() -> Self {
        FieldMapping::new(
            RuleLogSource {
                product: Some("macos".into()),
                category: None,
                service: None,
            },
            MACOS_ECS_FIELDS.iter().copied(),
        )
    }
}

/// Sigma field → Elastic Common Schema field, for macOS events (the shared
/// macOS dataset, Elastic Endpoint): used by [`FieldMapping::macos_ecs`] and
/// by the backend's agent mappings.
pub const MACOS_ECS_FIELDS: &[(&str, &str)] = &[
    ("Image", "process.executable"),
    ("CommandLine", "process.command_line"),
    ("ParentImage", "process.parent.executable"),
    ("ParentCommandLine", "process.parent.command_line"),
    ("User", "user.name"),
    ("CurrentDirectory", "process.working_directory"),
    ("ProcessId", "process.pid"),
    ("ParentProcessId", "process.parent.pid"),
    ("TargetFilename", "file.path"),
    ("DestinationIp", "destination.ip"),
    ("DestinationPort", "destination.port"),
    ("DestinationHostname", "destination.domain"),
    ("SourceIp", "source.ip"),
    ("SourcePort", "source.port"),
    ("Protocol", "network.transport"),
];
