//! Sigma string values: wildcards, escaping and the compiled string matchers.
//!
//! Escaping follows the Sigma rules specification v2.1, section "Escaping":
//! a backslash escapes `*`, `?` and itself; any other backslash is a plain
//! backslash. So `\*` is a literal star, `\\*` a backslash then a wildcard,
//! `\\\*` a backslash then a literal star, and `\\\\` two backslashes.

use memchr::memmem;

/// One piece of a Sigma string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Lit(String),
    /// `*`: any run of characters, possibly empty.
    Star,
    /// `?`: exactly one character.
    One,
}

/// A Sigma string: literals and wildcards, normalized so that literals are
/// merged and a run of stars is one star.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Pattern {
    parts: Vec<Part>,
}

impl Pattern {
    /// Parses a rule value with Sigma's wildcard and escaping rules.
    pub(crate) fn parse(s: &str) -> Self {
        let mut p = Pattern::default();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&n @ ('*' | '?' | '\\')) => {
                        chars.next();
                        p.push_char(n);
                    }
                    _ => p.push_char('\\'),
                },
                '*' => p.push(Part::Star),
                '?' => p.push(Part::One),
                c => p.push_char(c),
            }
        }
        p
    }

    /// A pattern that matches exactly `s` (no wildcard interpretation).
    pub(crate) fn literal(s: &str) -> Self {
        let mut p = Pattern::default();
        if !s.is_empty() {
            p.parts.push(Part::Lit(s.to_owned()));
        }
        p
    }

    pub(crate) fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub(crate) fn push(&mut self, part: Part) {
        match (self.parts.last_mut(), part) {
            (Some(Part::Star), Part::Star) => {}
            (Some(Part::Lit(a)), Part::Lit(b)) => a.push_str(&b),
            (_, Part::Lit(b)) if b.is_empty() => {}
            (_, part) => self.parts.push(part),
        }
    }

    pub(crate) fn push_char(&mut self, c: char) {
        if let Some(Part::Lit(a)) = self.parts.last_mut() {
            a.push(c);
        } else {
            self.parts.push(Part::Lit(c.to_string()));
        }
    }

    pub(crate) fn extend(&mut self, other: Pattern) {
        for part in other.parts {
            self.push(part);
        }
    }

    /// `contains`: a star on both ends (unless already there).
    pub(crate) fn contains(self) -> Self {
        self.starts_with().ends_with()
    }

    /// `startswith`: a star at the end.
    pub(crate) fn starts_with(mut self) -> Self {
        self.push(Part::Star);
        self
    }

    /// `endswith`: a star at the start.
    pub(crate) fn ends_with(self) -> Self {
        if self.parts.first() == Some(&Part::Star) {
            return self;
        }
        let mut p = Pattern {
            parts: vec![Part::Star],
        };
        p.extend(self);
        p
    }

    /// The text, if the pattern has no wildcard.
    pub(crate) fn as_plain(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The pattern written back in Sigma syntax, for messages.
    pub(crate) fn to_sigma(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => {
                    for c in s.chars() {
                        if matches!(c, '*' | '?' | '\\') {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
                Part::Star => out.push('*'),
                Part::One => out.push('?'),
            }
        }
        out
    }
}

/// Appends the case-folded form of `s` to `out`.
///
/// Folding is per character (`char::to_lowercase`), never context dependent
/// like `str::to_lowercase` (which turns a final Σ into ς), so that a needle
/// and a haystack fold the same way wherever the text sits. ASCII takes a fast
/// path that allocates nothing once `out` has grown.
pub(crate) fn fold_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
    } else {
        for c in s.chars() {
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        }
    }
}

pub(crate) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// A compiled string test. Needles are stored already case-folded when the
/// matcher is case-insensitive; the caller passes the folded haystack.
#[derive(Debug, Clone)]
pub(crate) enum StrMatcher {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<memmem::Finder<'static>>),
    Glob(Glob),
    /// `*`: any value at all (including the empty string).
    Any,
}

impl StrMatcher {
    /// Compiles a pattern; `cased == false` folds its literals.
    pub(crate) fn new(p: &Pattern, cased: bool) -> Self {
        let norm = |s: &str| -> Box<str> {
            if cased {
                s.into()
            } else {
                fold(s).into()
            }
        };
        match p.parts() {
            [] => StrMatcher::Exact("".into()),
            [Part::Star] => StrMatcher::Any,
            [Part::Lit(s)] => StrMatcher::Exact(norm(s)),
            [Part::Lit(s), Part::Star] => StrMatcher::Prefix(norm(s)),
            [Part::Star, Part::Lit(s)] => StrMatcher::Suffix(norm(s)),
            [Part::Star, Part::Lit(s), Part::Star] => StrMatcher::Contains(Box::new(
                memmem::Finder::new(norm(s).as_bytes()).into_owned(),
            )),
            parts => StrMatcher::Glob(Glob::new(parts, cased)),
        }
    }

    pub(crate) fn is_match(&self, h: &str) -> bool {
        match self {
            StrMatcher::Exact(s) => h == &**s,
            StrMatcher::Prefix(s) => h.starts_with(&**s),
            StrMatcher::Suffix(s) => h.ends_with(&**s),
            StrMatcher::Contains(f) => f.find(h.as_bytes()).is_some(),
            StrMatcher::Glob(g) => g.is_match(h),
            StrMatcher::Any => true,
        }
    }
}

/// A token of a star-free segment of a glob.
#[derive(Debug, Clone)]
enum Tok {
    Lit(Box<str>),
    /// `n` consecutive `?`.
    Any(usize),
}

/// A glob split at its stars: `seg0 * seg1 * ... * segN`. Each segment has a
/// fixed length in characters, so the leftmost match of each middle segment is
/// always the best choice and matching never backtracks.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    segs: Vec<Vec<Tok>>,
    /// `false` when the pattern has no star: the one segment spans everything.
    has_star: bool,
}

impl Glob {
    /// The longest literal piece: any text the glob matches contains it.
    pub(crate) fn longest_literal(&self) -> Option<&str> {
        self.segs
            .iter()
            .flatten()
            .filter_map(|t| match t {
                Tok::Lit(s) => Some(&**s),
                Tok::Any(_) => None,
            })
            .max_by_key(|s| s.len())
    }

    fn new(parts: &[Part], cased: bool) -> Self {
        let mut segs = vec![Vec::new()];
        let mut has_star = false;
        for part in parts {
            let seg = segs.last_mut().expect("segs is never empty");
            match part {
                Part::Lit(s) => seg.push(Tok::Lit(if cased {
                    s.as_str().into()
                } else {
                    fold(s).into()
                })),
                Part::One => match seg.last_mut() {
                    Some(Tok::Any(n)) => *n += 1,
                    _ => seg.push(Tok::Any(1)),
                },
                Part::Star => {
                    has_star = true;
                    segs.push(Vec::new());
                }
            }
        }
        Glob { segs, has_star }
    }

    pub(crate) fn is_match(&self, h: &str) -> bool {
        if !self.has_star {
            return match_at(h, 0, &self.segs[0]) == Some(h.len());
        }
        let (first, rest) = self.segs.split_first().expect("segs is never empty");
        let (last, middle) = rest.split_last().expect("a star makes two segments");
        let Some(mut pos) = match_at(h, 0, first) else {
            return false;
        };
        for seg in middle {
            match find_from(h, pos, seg) {
                Some(end) => pos = end,
                None => return false,
            }
        }
        // The last segment is anchored at the end: find where it must start.
        let Some(start) = start_of_suffix(h, last) else {
            return false;
        };
        start >= pos && match_at(h, start, last) == Some(h.len())
    }
}

/// Matches `seg` at byte `at`; returns the end byte.
fn match_at(h: &str, mut at: usize, seg: &[Tok]) -> Option<usize> {
    for tok in seg {
        match tok {
            Tok::Lit(s) => {
                if !h[at..].starts_with(&**s) {
                    return None;
                }
                at += s.len();
            }
            Tok::Any(n) => {
                let mut it = h[at..].char_indices();
                for _ in 0..*n {
                    it.next()?;
                }
                at = it.next().map_or(h.len(), |(i, _)| at + i);
            }
        }
    }
    Some(at)
}

/// The leftmost match of `seg` at or after byte `from`; returns its end.
fn find_from(h: &str, from: usize, seg: &[Tok]) -> Option<usize> {
    if let Some(Tok::Lit(first)) = seg.first() {
        let mut at = from;
        while let Some(i) = memmem::find(&h.as_bytes()[at..], first.as_bytes()) {
            let start = at + i;
            if let Some(end) = match_at(h, start, seg) {
                return Some(end);
            }
            // Step one character past this candidate.
            at = start + h[start..].chars().next().map_or(1, char::len_utf8);
            if at > h.len() {
                return None;
            }
        }
        return None;
    }
    let mut at = from;
    loop {
        if let Some(end) = match_at(h, at, seg) {
            return Some(end);
        }
        at += h[at..].chars().next()?.len_utf8();
    }
}

/// Where a fixed-length segment must start to end exactly at the end of `h`.
fn start_of_suffix(h: &str, seg: &[Tok]) -> Option<usize> {
    let mut end = h.len();
    for tok in seg.iter().rev() {
        match tok {
            Tok::Lit(s) => {
                end = end.checked_sub(s.len())?;
                if !h.is_char_boundary(end) {
                    return None;
                }
            }
            Tok::Any(n) => {
                let mut it = h[..end].char_indices().rev();
                for _ in 0..*n {
                    let (i, _) = it.next()?;
                    end = i;
                }
            }
        }
    }
    h.is_char_boundary(end).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pat: &str, h: &str) -> bool {
        StrMatcher::new(&Pattern::parse(pat), false).is_match(&fold(h))
    }

    #[test]
    fn escaping_follows_the_spec() {
        assert_eq!(Pattern::parse(r"a\*b").as_plain(), Some("a*b"));
        assert_eq!(Pattern::parse(r"a\?b").as_plain(), Some("a?b"));
        assert_eq!(
            Pattern::parse(r"c:\windows").as_plain(),
            Some(r"c:\windows")
        );
        assert_eq!(
            Pattern::parse(r"c:\\windows").as_plain(),
            Some(r"c:\windows")
        );
        assert_eq!(
            Pattern::parse(r"a\\*").parts(),
            &[Part::Lit(r"a\".into()), Part::Star]
        );
        assert_eq!(Pattern::parse(r"a\\\*").as_plain(), Some(r"a\*"));
        assert_eq!(Pattern::parse(r"\\\\").as_plain(), Some(r"\\"));
        assert_eq!(Pattern::parse(r"\\\").as_plain(), Some(r"\\"));
        assert_eq!(Pattern::parse(r"end\").as_plain(), Some(r"end\"));
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("a*c", "abbbc"));
        assert!(m("a*c", "ac"));
        assert!(!m("a*c", "acb"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*a?c*", "xxabcxx"));
        assert!(m("?", "é"));
        assert!(!m("??", "é"));
        assert!(m("*.exe", "C:\\X.EXE"));
        // `\*` is an escaped star; a backslash before a wildcard is `\\*`.
        assert!(m(r"c:\\*\x.exe", r"c:\a\b\x.exe"));
        assert!(!m(r"c:\*\x.exe", r"c:\a\b\x.exe"));
        assert!(m(r"c:\*\x.exe", r"c:*\x.exe"));
        assert!(m("*ab*ab", "abab"));
        assert!(!m("*ab*ab", "ab"));
        assert!(m("a*b?", "axxbyb!"));
        assert!(m("*?", "x"));
        assert!(!m("*?", ""));
        assert!(m("x*?*y", "xzy"));
        assert!(!m("x*?*y", "xy"));
    }

    /// Found by `globs_agree_with_a_regex_model`: the suffix segment's
    /// start landed inside a multi-byte character and slicing panicked.
    #[test]
    fn regression_suffix_start_inside_multibyte_char() {
        assert!(!m("*?a", "aé"));
        assert!(m("*?a", "éa"));
        assert!(!m("*?ab", "xéb"));
    }

    #[test]
    fn unicode_case_folding() {
        assert!(m("ÄBC*", "äbcdef"));
        assert!(m("*straße*", "STRAßE"));
        assert!(m("σ", "Σ"));
    }
}
