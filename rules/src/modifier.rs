//! Value modifiers: their names, and the transformations (`windash`,
//! `base64`, `base64offset`, `utf16*`, `expand`) applied to rule values at
//! load time, so that nothing is transformed per event.

use std::collections::HashMap;

use crate::error::ErrorKind;
use crate::pattern::{Part, Pattern};

/// Every modifier of the Sigma v2.1 modifier appendix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Modifier {
    Contains,
    StartsWith,
    EndsWith,
    All,
    Exists,
    Cased,
    Neq,
    Windash,
    Re,
    ReI,
    ReM,
    ReS,
    Base64,
    Base64Offset,
    Utf16Le,
    Utf16Be,
    Utf16,
    Lt,
    Lte,
    Gt,
    Gte,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Cidr,
    Expand,
    FieldRef,
}

impl Modifier {
    pub(crate) fn parse(name: &str) -> Result<Self, ErrorKind> {
        Ok(match name {
            "contains" => Self::Contains,
            "startswith" => Self::StartsWith,
            "endswith" => Self::EndsWith,
            "all" => Self::All,
            "exists" => Self::Exists,
            "cased" => Self::Cased,
            "neq" => Self::Neq,
            "windash" => Self::Windash,
            "re" => Self::Re,
            "i" | "ignorecase" => Self::ReI,
            "m" | "multiline" => Self::ReM,
            "s" | "dotall" => Self::ReS,
            "base64" => Self::Base64,
            "base64offset" => Self::Base64Offset,
            "utf16le" | "wide" => Self::Utf16Le,
            "utf16be" => Self::Utf16Be,
            "utf16" => Self::Utf16,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "year" => Self::Year,
            "cidr" => Self::Cidr,
            "expand" => Self::Expand,
            "fieldref" => Self::FieldRef,
            other => return Err(ErrorKind::UnknownModifier(other.to_owned())),
        })
    }
}

/// A value on its way through the transformation modifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transformed {
    Pattern(Pattern),
    /// Raw bytes from a `utf16*` modifier, waiting for `base64`.
    Bytes(Vec<u8>),
}

impl Transformed {
    fn plain_bytes(&self, modifier: &str) -> Result<Vec<u8>, ErrorKind> {
        match self {
            Transformed::Bytes(b) => Ok(b.clone()),
            Transformed::Pattern(p) => match p.as_plain() {
                Some(s) => Ok(s.as_bytes().to_vec()),
                None => Err(ErrorKind::BadModifier(format!(
                    "`{modifier}` cannot encode a value with wildcards (`{}`)",
                    p.to_sigma()
                ))),
            },
        }
    }

    fn plain_text(&self, modifier: &str) -> Result<String, ErrorKind> {
        match self {
            Transformed::Bytes(_) => Err(ErrorKind::BadModifier(format!(
                "`{modifier}` cannot follow a utf16 modifier"
            ))),
            Transformed::Pattern(p) => match p.as_plain() {
                Some(s) => Ok(s.to_owned()),
                None => Err(ErrorKind::BadModifier(format!(
                    "`{modifier}` cannot encode a value with wildcards (`{}`)",
                    p.to_sigma()
                ))),
            },
        }
    }

    /// The final pattern; bytes must be valid UTF-8 text by now.
    pub(crate) fn into_pattern(self) -> Result<Pattern, ErrorKind> {
        match self {
            Transformed::Pattern(p) => Ok(p),
            Transformed::Bytes(b) => {
                String::from_utf8(b)
                    .map(|s| Pattern::literal(&s))
                    .map_err(|_| {
                        ErrorKind::BadModifier(
                            "a utf16 modifier must be followed by base64 or base64offset".into(),
                        )
                    })
            }
        }
    }
}

/// Applies one transformation modifier to every value; a value may become
/// several (OR-linked) values.
pub(crate) fn transform(
    m: Modifier,
    values: Vec<Transformed>,
) -> Result<Vec<Transformed>, ErrorKind> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match m {
            Modifier::Windash => match v {
                Transformed::Pattern(p) => {
                    out.extend(windash(&p)?.into_iter().map(Transformed::Pattern));
                }
                Transformed::Bytes(_) => {
                    return Err(ErrorKind::BadModifier(
                        "`windash` after a utf16 modifier".into(),
                    ))
                }
            },
            Modifier::Base64 => {
                let b = v.plain_bytes("base64")?;
                out.push(Transformed::Pattern(Pattern::literal(&base64(&b))));
            }
            Modifier::Base64Offset => {
                let b = v.plain_bytes("base64offset")?;
                for s in base64_offsets(&b) {
                    out.push(Transformed::Pattern(Pattern::literal(&s)));
                }
            }
            Modifier::Utf16Le | Modifier::Utf16Be | Modifier::Utf16 => {
                let s = v.plain_text("utf16")?;
                let mut bytes = Vec::with_capacity(s.len() * 2 + 2);
                if m == Modifier::Utf16 {
                    bytes.extend_from_slice(&[0xFF, 0xFE]);
                }
                for unit in s.encode_utf16() {
                    if m == Modifier::Utf16Be {
                        bytes.extend_from_slice(&unit.to_be_bytes());
                    } else {
                        bytes.extend_from_slice(&unit.to_le_bytes());
                    }
                }
                out.push(Transformed::Bytes(bytes));
            }
            _ => out.push(v),
        }
    }
    Ok(out)
}

/// The dash characters `windash` swaps (modifier appendix v2.1): hyphen,
/// slash, en dash, em dash, horizontal bar.
pub(crate) const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// Cap on the permutations one value may expand to (5 dashes → 3,125).
const WINDASH_MAX_VARIANTS: usize = 3125;

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `windash`: every `-` or `/` that starts a flag (not preceded by a word
/// character, followed by one; this is where pySigma swaps them, and it is
/// what keeps `C:/x-y` intact) takes each of the five dash forms, in all
/// permutations.
fn windash(p: &Pattern) -> Result<Vec<Pattern>, ErrorKind> {
    // Positions (part index, char index) of swappable dashes.
    let mut sites: Vec<(usize, usize)> = Vec::new();
    for (pi, part) in p.parts().iter().enumerate() {
        if let Part::Lit(s) = part {
            let chars: Vec<char> = s.chars().collect();
            for (ci, &c) in chars.iter().enumerate() {
                if c != '-' && c != '/' {
                    continue;
                }
                let before_ok = ci == 0 || !is_word(chars[ci - 1]);
                let after_ok = chars.get(ci + 1).is_some_and(|&n| is_word(n));
                if before_ok && after_ok {
                    sites.push((pi, ci));
                }
            }
        }
    }
    if sites.is_empty() {
        return Ok(vec![p.clone()]);
    }
    let variants = DASHES
        .len()
        .checked_pow(u32::try_from(sites.len()).unwrap_or(u32::MAX));
    if variants.is_none_or(|v| v > WINDASH_MAX_VARIANTS) {
        return Err(ErrorKind::BadModifier(format!(
            "`windash` on `{}` would make more than {WINDASH_MAX_VARIANTS} values",
            p.to_sigma()
        )));
    }
    let total = variants.unwrap_or(1);
    let mut out = Vec::with_capacity(total);
    for n in 0..total {
        let mut choice = n;
        let mut np = Pattern::default();
        for (pi, part) in p.parts().iter().enumerate() {
            match part {
                Part::Lit(s) => {
                    for (ci, c) in s.chars().enumerate() {
                        if sites.contains(&(pi, ci)) {
                            np.push_char(DASHES[choice % DASHES.len()]);
                            choice /= DASHES.len();
                        } else {
                            np.push_char(c);
                        }
                    }
                }
                other => np.push(other.clone()),
            }
        }
        out.push(np);
    }
    Ok(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4).
pub(crate) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(char::from(B64[(n >> 18) as usize & 63]));
        out.push(char::from(B64[(n >> 12) as usize & 63]));
        out.push(if chunk.len() > 1 {
            char::from(B64[(n >> 6) as usize & 63])
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            char::from(B64[n as usize & 63])
        } else {
            '='
        });
    }
    out
}

/// `base64offset`: the three encodings of `data` shifted by 0, 1 and 2
/// bytes, each cut to the characters that do not depend on the unknown
/// neighbouring bytes. Shift `i` prefixes `i` bytes, drops the first
/// `[0, 2, 3][i]` characters, and drops `[0, 3, 2][(len + i) % 3]` characters
/// at the end (the same cut pySigma and the Sigma reference tooling make).
pub(crate) fn base64_offsets(data: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    let mut out = Vec::with_capacity(3);
    for (i, &start) in START.iter().enumerate() {
        let mut shifted = vec![b' '; i];
        shifted.extend_from_slice(data);
        let enc = base64(&shifted);
        let end = enc.len().saturating_sub(END[(data.len() + i) % 3]);
        out.push(
            enc.get(start..end.max(start))
                .unwrap_or_default()
                .to_owned(),
        );
    }
    out
}

/// `expand`: replaces each `%name%` with each configured value (all
/// combinations when a value holds several placeholders). `\%` is a plain
/// percent sign. The result is then read as a Sigma pattern, so configured
/// values may use wildcards.
pub(crate) fn expand(
    raw: &str,
    placeholders: &HashMap<String, Vec<String>>,
) -> Result<Vec<String>, ErrorKind> {
    enum Seg {
        Text(String),
        Hole(String),
    }
    let mut segs = Vec::new();
    let mut text = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'%') => {
                chars.next();
                // Keep it escaped from Pattern::parse's point of view: a `%`
                // means nothing there, so the plain character is enough.
                text.push('%');
            }
            '%' => {
                let mut name = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '%' {
                        closed = true;
                        break;
                    }
                    name.push(n);
                }
                if !closed || name.is_empty() {
                    text.push('%');
                    text.push_str(&name);
                    continue;
                }
                segs.push(Seg::Text(std::mem::take(&mut text)));
                segs.push(Seg::Hole(name));
            }
            c => text.push(c),
        }
    }
    segs.push(Seg::Text(text));
    let mut results = vec![String::new()];
    for seg in segs {
        match seg {
            Seg::Text(t) => results.iter_mut().for_each(|r| r.push_str(&t)),
            Seg::Hole(name) => {
                let values = placeholders
                    .get(&name)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| ErrorKind::UnconfiguredPlaceholder(name.clone()))?;
                results = results
                    .iter()
                    .flat_map(|r| values.iter().map(move |v| format!("{r}{v}")))
                    .collect();
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"http://"), "aHR0cDovLw==");
    }

    #[test]
    fn base64offset_known_vectors() {
        // The example values of the Sigma modifier documentation.
        assert_eq!(
            base64_offsets(b"/bin/bash"),
            ["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]
        );
        assert_eq!(
            base64_offsets(b"http://"),
            ["aHR0cDovL", "h0dHA6Ly", "odHRwOi8v"]
        );
    }

    #[test]
    fn windash_only_swaps_flag_dashes() {
        let v = windash(&Pattern::parse(" -exec")).unwrap();
        assert_eq!(v.len(), 5);
        assert!(v.contains(&Pattern::literal(" /exec")));
        assert!(v.contains(&Pattern::literal(" \u{2015}exec")));
        assert_eq!(windash(&Pattern::parse("a-b")).unwrap().len(), 1);
        assert_eq!(windash(&Pattern::parse("x - y")).unwrap().len(), 1);
        assert_eq!(windash(&Pattern::parse("-a -b")).unwrap().len(), 25);
        assert_eq!(windash(&Pattern::parse("/c")).unwrap().len(), 5);
    }

    #[test]
    fn expand_placeholders() {
        let mut map = HashMap::new();
        map.insert(
            "Servers".to_owned(),
            vec!["srv1".to_owned(), "srv*".to_owned()],
        );
        assert_eq!(expand("%Servers%", &map).unwrap(), ["srv1", "srv*"]);
        assert_eq!(expand(r"\%Servers%x", &map).unwrap(), ["%Servers%x"]);
        assert_eq!(
            expand("%Nope%", &map),
            Err(ErrorKind::UnconfiguredPlaceholder("Nope".into()))
        );
        assert_eq!(expand("50% off", &map).unwrap(), ["50% off"]);
    }
}
