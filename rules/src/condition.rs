//! The condition language: `and`, `or`, `not`, parentheses, `1 of`/`all of`
//! (and `N of`) over identifier patterns or `them`.
//!
//! Precedence, least to most binding (Sigma rules specification v2.1,
//! "Condition"): `or`, `and`, `not`, `x of`, parentheses.

use crate::error::ErrorKind;

/// How many of a set of identifiers must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quantifier {
    /// `1 of` / `any of`, or more generally `N of`.
    AtLeast(usize),
    /// `all of`.
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cond {
    Ident(String),
    /// `quant of pattern`; `None` is `them`.
    Of(Quantifier, Option<String>),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Of,
    Them,
    All,
    Number(usize),
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, ErrorKind> {
    let mut toks = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        match c {
            '(' => {
                chars.next();
                toks.push(Tok::LParen);
            }
            ')' => {
                chars.next();
                toks.push(Tok::RParen);
            }
            '|' => {
                return Err(ErrorKind::Unsupported(
                    "aggregation expressions (`| count() ...`) are Sigma v1 syntax; use a correlation rule"
                        .into(),
                ))
            }
            _ => {
                let mut end = i;
                while let Some(&(j, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '|' {
                        break;
                    }
                    end = j + c.len_utf8();
                    chars.next();
                }
                let word = &s[i..end];
                let tok = match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "of" => Tok::Of,
                    "them" => Tok::Them,
                    "all" => Tok::All,
                    "any" => Tok::Number(1),
                    _ => match word.parse::<usize>() {
                        Ok(n) => Tok::Number(n),
                        Err(_) => Tok::Word(word.to_owned()),
                    },
                };
                toks.push(tok);
            }
        }
    }
    Ok(toks)
}

/// Parses one condition string.
pub(crate) fn parse(s: &str) -> Result<Cond, ErrorKind> {
    let toks = tokenize(s)?;
    let mut p = Parser { toks, pos: 0 };
    let cond = p.or()?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(ErrorKind::BadCondition(format!(
            "unexpected {} in `{s}`",
            describe(t)
        )));
    }
    Ok(cond)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::And => "`and`".into(),
        Tok::Or => "`or`".into(),
        Tok::Not => "`not`".into(),
        Tok::Of => "`of`".into(),
        Tok::Them => "`them`".into(),
        Tok::All => "`all`".into(),
        Tok::Number(n) => format!("`{n}`"),
        Tok::Word(w) => format!("`{w}`"),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Cond, ErrorKind> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::Or(items)
        })
    }

    fn and(&mut self) -> Result<Cond, ErrorKind> {
        let mut items = vec![self.not()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::And(items)
        })
    }

    fn not(&mut self) -> Result<Cond, ErrorKind> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, ErrorKind> {
        match self.next() {
            Some(Tok::LParen) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(inner),
                    Some(t) => Err(ErrorKind::BadCondition(format!(
                        "expected `)`, found {}",
                        describe(&t)
                    ))),
                    None => Err(ErrorKind::BadCondition("missing `)`".into())),
                }
            }
            Some(Tok::Number(n)) => self.of(Quantifier::AtLeast(n)),
            Some(Tok::All) => self.of(Quantifier::All),
            Some(Tok::Word(w)) => Ok(Cond::Ident(w)),
            Some(t) => Err(ErrorKind::BadCondition(format!(
                "expected an identifier, `(`, `not` or `x of`, found {}",
                describe(&t)
            ))),
            None => Err(ErrorKind::BadCondition(
                "unexpected end of condition".into(),
            )),
        }
    }

    fn of(&mut self, q: Quantifier) -> Result<Cond, ErrorKind> {
        if let Quantifier::AtLeast(0) = q {
            return Err(ErrorKind::BadCondition("`0 of` is not meaningful".into()));
        }
        match self.next() {
            Some(Tok::Of) => {}
            _ => {
                return Err(ErrorKind::BadCondition(
                    "expected `of` after a quantifier".into(),
                ))
            }
        }
        match self.next() {
            Some(Tok::Them) => Ok(Cond::Of(q, None)),
            Some(Tok::Word(w)) => Ok(Cond::Of(q, Some(w))),
            Some(t) => Err(ErrorKind::BadCondition(format!(
                "expected `them` or an identifier pattern after `of`, found {}",
                describe(&t)
            ))),
            None => Err(ErrorKind::BadCondition(
                "expected `them` or a pattern after `of`".into(),
            )),
        }
    }
}

/// Matches a `1 of` pattern (only `*` is a wildcard) against an identifier.
pub(crate) fn ident_pattern_matches(pattern: &str, ident: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == ident;
    }
    let (first, rest) = parts.split_first().expect("split yields at least one part");
    let (last, middle) = rest.split_last().expect("a star yields two parts");
    let Some(mut h) = ident.strip_prefix(first) else {
        return false;
    };
    for m in middle {
        match h.find(m) {
            Some(i) => h = &h[i + m.len()..],
            None => return false,
        }
    }
    h.len() >= last.len() && h.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Cond {
        Cond::Ident(s.into())
    }

    #[test]
    fn precedence_not_and_or() {
        assert_eq!(
            parse("a or b and not c").unwrap(),
            Cond::Or(vec![
                id("a"),
                Cond::And(vec![id("b"), Cond::Not(Box::new(id("c")))])
            ])
        );
        assert_eq!(
            parse("not a and b").unwrap(),
            Cond::And(vec![Cond::Not(Box::new(id("a"))), id("b")])
        );
        assert_eq!(
            parse("(a or b) and c").unwrap(),
            Cond::And(vec![Cond::Or(vec![id("a"), id("b")]), id("c")])
        );
    }

    #[test]
    fn quantifiers() {
        assert_eq!(
            parse("1 of sel* and not all of them").unwrap(),
            Cond::And(vec![
                Cond::Of(Quantifier::AtLeast(1), Some("sel*".into())),
                Cond::Not(Box::new(Cond::Of(Quantifier::All, None)))
            ])
        );
        assert_eq!(
            parse("any of x").unwrap(),
            Cond::Of(Quantifier::AtLeast(1), Some("x".into()))
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "a and",
            "(a",
            "a b",
            "1 of",
            "all them",
            "a )",
            "sel | count() > 5",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        assert!(ident_pattern_matches("selection_*", "selection_a"));
        assert!(ident_pattern_matches("sel*", "sel"));
        assert!(!ident_pattern_matches("sel*", "filter"));
        assert!(ident_pattern_matches("*_main_*", "filter_main_x"));
        assert!(ident_pattern_matches("*", "x"));
        assert!(ident_pattern_matches("a*a", "aa"));
        assert!(!ident_pattern_matches("a*a", "a"));
    }
}
