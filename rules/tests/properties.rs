//! Property tests: letter case, escaping, base64offset at every offset,
//! windash variants, cidr boundaries, and null vs '' vs missing vs exists.

mod common;

use common::{b64, fires, one_rule, yaml_quote};
use proptest::prelude::*;
use serde_json::{json, Value};

fn ev(key: &str, v: impl Into<Value>) -> Value {
    json!({ key: v.into() })
}

/// Flips the case of each letter according to `mask`.
fn recase(s: &str, mask: &[bool]) -> String {
    s.chars()
        .zip(mask.iter().cycle())
        .flat_map(|(c, &up)| -> Box<dyn Iterator<Item = char>> {
            if up {
                Box::new(c.to_uppercase())
            } else {
                Box::new(c.to_lowercase())
            }
        })
        .collect()
}

/// Escapes a literal for a Sigma value.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matching_ignores_letter_case(
        needle in "[a-zA-Zäöüéß0-9 ]{1,12}",
        pre in "[a-z ]{0,6}",
        post in "[a-z ]{0,6}",
        mask in proptest::collection::vec(any::<bool>(), 1..8),
    ) {
        // ß upper-cases to "SS", which folds back to "ss": not the same text.
        prop_assume!(!needle.contains('ß'));
        let set = one_rule(&format!("s:\n    A|contains: {}\ncondition: s", yaml_quote(&needle)));
        let hay = format!("{pre}{}{post}", recase(&needle, &mask));
        prop_assert!(fires(&set, &ev("A", hay)));
        let exact = one_rule(&format!("s:\n    A: {}\ncondition: s", yaml_quote(&needle)));
        prop_assert!(fires(&exact, &ev("A", recase(&needle, &mask))));
    }

    #[test]
    fn escaped_wildcards_are_literal(lit in "[a-c*?\\\\]{1,10}", other in "[a-c]{1,10}") {
        let set = one_rule(&format!("s:\n    A: {}\ncondition: s", yaml_quote(&escape(&lit))));
        prop_assert!(fires(&set, &ev("A", lit.clone())));
        if other != lit {
            prop_assert!(!fires(&set, &ev("A", other)));
        }
    }

    #[test]
    fn base64offset_finds_every_offset(
        needle in "[ -~]{3,20}",
        prefix in proptest::collection::vec(any::<u8>(), 0..9),
        suffix in proptest::collection::vec(any::<u8>(), 0..5),
    ) {
        let set = one_rule(&format!("s:\n    A|base64offset|contains: {}\ncondition: s", yaml_quote(&escape(&needle))));
        let mut data = prefix.clone();
        data.extend_from_slice(needle.as_bytes());
        data.extend_from_slice(&suffix);
        prop_assert!(fires(&set, &ev("A", b64(&data))), "offset {}", prefix.len() % 3);
    }

    #[test]
    fn windash_accepts_every_dash(flag in "[a-z]{1,8}", dash in 0usize..5, pre in "[a-z]{0,5}") {
        const DASHES: [&str; 5] = ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"];
        let set = one_rule(&format!("s:\n    A|contains|windash: ' -{flag}'\ncondition: s"));
        let hit = format!("{pre} {}{flag}", DASHES[dash]);
        prop_assert!(fires(&set, &ev("A", hit)));
        let miss = format!("{pre} +{flag}");
        prop_assert!(!fires(&set, &ev("A", miss)));
    }

    #[test]
    fn cidr_v4_boundaries(addr in any::<u32>(), len in 0u32..=32) {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let net = addr & mask;
        let last = net | !mask;
        let ip = |v: u32| std::net::Ipv4Addr::from(v).to_string();
        let set = one_rule(&format!("s:\n    Ip|cidr: '{}/{len}'\ncondition: s", ip(addr)));
        prop_assert!(fires(&set, &ev("Ip", ip(net))));
        prop_assert!(fires(&set, &ev("Ip", ip(last))));
        if net > 0 {
            prop_assert!(!fires(&set, &ev("Ip", ip(net - 1))));
        }
        if last < u32::MAX {
            prop_assert!(!fires(&set, &ev("Ip", ip(last + 1))));
        }
    }

    #[test]
    fn cidr_v6_boundaries(addr in any::<u128>(), len in 0u32..=128) {
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
        let net = addr & mask;
        let last = net | !mask;
        let ip = |v: u128| std::net::Ipv6Addr::from(v).to_string();
        let set = one_rule(&format!("s:\n    Ip|cidr: '{}/{len}'\ncondition: s", ip(addr)));
        // IPv4-mapped addresses are read as IPv4; keep to plain IPv6 here.
        prop_assume!(std::net::Ipv6Addr::from(net).to_ipv4_mapped().is_none());
        prop_assume!(std::net::Ipv6Addr::from(last).to_ipv4_mapped().is_none());
        prop_assert!(fires(&set, &ev("Ip", ip(net))));
        prop_assert!(fires(&set, &ev("Ip", ip(last))));
        if net > 0 && std::net::Ipv6Addr::from(net - 1).to_ipv4_mapped().is_none() {
            prop_assert!(!fires(&set, &ev("Ip", ip(net - 1))));
        }
        if last < u128::MAX && std::net::Ipv6Addr::from(last + 1).to_ipv4_mapped().is_none() {
            prop_assert!(!fires(&set, &ev("Ip", ip(last + 1))));
        }
    }

    #[test]
    fn null_empty_missing_exists(state in 0usize..4) {
        // 0: missing, 1: null, 2: '', 3: 'x'
        let event = match state {
            0 => json!({}),
            1 => json!({"A": null}),
            2 => json!({"A": ""}),
            _ => json!({"A": "x"}),
        };
        let null = one_rule("s:\n    A: null\ncondition: s");
        let empty = one_rule("s:\n    A: ''\ncondition: s");
        let exists = one_rule("s:\n    A|exists: true\ncondition: s");
        let absent = one_rule("s:\n    A|exists: false\ncondition: s");
        let not_null = one_rule("s:\n    A: null\ncondition: not s");
        prop_assert_eq!(fires(&null, &event), state <= 1);
        prop_assert_eq!(fires(&empty, &event), state == 2);
        prop_assert_eq!(fires(&exists, &event), state >= 1);
        prop_assert_eq!(fires(&absent, &event), state == 0);
        prop_assert_eq!(fires(&not_null, &event), state >= 2);
    }
}

/// A pattern token for the glob model below.
#[derive(Debug, Clone)]
enum Tok {
    Char(char),
    Star,
    One,
}

fn tok() -> impl Strategy<Value = Tok> {
    prop_oneof![
        4 => prop::sample::select(vec!['a', 'b', 'é', 'ß', 'Σ', '\\', '*', '?', '.']).prop_map(Tok::Char),
        1 => Just(Tok::Star),
        1 => Just(Tok::One),
    ]
}

/// Per-character lowercase folding, as the engine documents it.
fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Wildcard matching agrees with a regular-expression model of the same
    /// pattern (on folded text), and never panics on multi-byte text.
    #[test]
    fn globs_agree_with_a_regex_model(
        toks in proptest::collection::vec(tok(), 0..8),
        hay in proptest::collection::vec(prop::sample::select(vec!['a', 'b', 'é', 'É', 'ß', 'Σ', 'σ', '\\', '*', '?', '.']), 0..10),
    ) {
        let hay: String = hay.into_iter().collect();
        let mut sigma = String::new();
        let mut re = String::from("(?s)^");
        for t in &toks {
            match t {
                Tok::Char(c) => {
                    if matches!(c, '*' | '?' | '\\') {
                        sigma.push('\\');
                    }
                    sigma.push(*c);
                    re.push_str(&regex::escape(&fold(&c.to_string())));
                }
                Tok::Star => {
                    sigma.push('*');
                    re.push_str(".*");
                }
                Tok::One => {
                    sigma.push('?');
                    re.push('.');
                }
            }
        }
        re.push('$');
        let model = regex::Regex::new(&re).expect("model regex").is_match(&fold(&hay));
        let set = one_rule(&format!("s:\n    A: {}\ncondition: s", yaml_quote(&sigma)));
        prop_assert_eq!(fires(&set, &ev("A", hay.clone())), model, "pattern {:?} on {:?}", sigma, hay);
    }
}

const VALID: &str = "title: t\nid: x\nlogsource:\n    product: test\ndetection:\n    sel:\n        A|contains|all:\n            - 'a*b'\n            - c\n    filter:\n        B|re: '^x'\n    condition: sel and not filter\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Loading never panics, whatever the text: a damaged rule is an error.
    #[test]
    fn loading_never_panics(start in 0usize..VALID.len(), len in 0usize..20, junk in "[ -~\n|*?\\\\:'\"\\[\\]{}%-]{0,20}") {
        let start = (0..=start).rev().find(|&i| VALID.is_char_boundary(i)).unwrap_or(0);
        let end = (start + len).min(VALID.len());
        let text = format!("{}{}{}", &VALID[..start], junk, &VALID[end..]);
        let loaded = picket_rules::RuleSet::from_sources([("f.yml", text)], &picket_rules::EngineConfig::new());
        // A junk `---` may split the text into documents; never more rules than one.
        prop_assert!(loaded.rules.len() <= 1);
        let _ = fires(&loaded.rules, &json!({"A": "xaxbxc", "B": "y"}));
    }
}
