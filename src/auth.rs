//! Who may do what: API tokens from the tokens file (`EDDY_TOKENS_FILE`), each stored as the
//! SHA-256 of the token, with scopes (`ingest`, `read`, `admin`) and the pipelines it may touch.
//!
//! File format, one token per line (`#` starts a comment):
//! `<name> sha256:<hex of the token> <scopes> [<pipelines>]`, scopes comma-separated,
//! pipelines comma-separated or `*` (the default).
//!
//! Invariant: a presented token is hashed once and compared with every entry in constant
//! time, so timing tells nothing about which entry, or how much of one, matched.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What a token may do; `admin` may do everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Post events, advance the watermark.
    Ingest,
    /// Pipelines, state, output, checkpoint lists.
    Read,
    /// Everything, including creating and deleting pipelines and triggering and restoring
    /// checkpoints.
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// The scope's name in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// One token of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
    /// `None`: every pipeline.
    pipelines: Option<Vec<String>>,
}

impl Principal {
    /// Whether the token has `scope` (admin has every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }

    /// Whether the token may touch `pipeline`.
    pub fn may_touch(&self, pipeline: &str) -> bool {
        self.pipelines
            .as_ref()
            .is_none_or(|p| p.iter().any(|n| n == pipeline))
    }
}

/// A bad tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {detail}")]
    Line {
        path: PathBuf,
        line: usize,
        detail: String,
    },
}

/// The tokens of a file.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    principals: Vec<Principal>,
}

impl Tokens {
    /// Reads and checks a tokens file; every bad line is an error naming it.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Tokens::parse(&text).map_err(|(line, detail)| TokensError::Line {
            path: path.to_owned(),
            line,
            detail,
        })
    }

    /// Parses the file format; the error is (line number from 1, what is wrong).
    pub fn parse(text: &str) -> Result<Tokens, (usize, String)> {
        let mut principals = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            principals.push(parse_line(line).map_err(|detail| (i + 1, detail))?);
        }
        Ok(Tokens { principals })
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for p in &self.principals {
            if constant_time_eq(&p.hash, &hash) {
                found = Some(p);
            }
        }
        found
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }
}

fn parse_line(line: &str) -> Result<Principal, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if !(3..=4).contains(&fields.len()) {
        return Err("expected: <name> sha256:<hex> <scopes> [<pipelines>]".into());
    }
    let hex_hash = fields[1]
        .strip_prefix("sha256:")
        .ok_or("the hash must start with sha256:")?;
    let hash: [u8; 32] = hex::decode(hex_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the hash must be 64 hex digits")?;
    let scopes = fields[2]
        .split(',')
        .map(|s| {
            Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?} (ingest, read, admin)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pipelines = match fields.get(3) {
        None | Some(&"*") => None,
        Some(list) => Some(list.split(',').map(str::to_owned).collect()),
    };
    Ok(Principal {
        name: fields[0].to_owned(),
        hash,
        scopes,
        pipelines,
    })
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random token and its tokens-file line.
pub fn new_token(
    name: &str,
    scopes: &str,
    pipelines: Option<&str>,
) -> Result<(String, String), String> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err("the name must be one word".into());
    }
    for s in scopes.split(',') {
        Scope::parse(s).ok_or_else(|| format!("unknown scope {s:?} (ingest, read, admin)"))?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("eddy_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let line = format!("{name} sha256:{hash} {scopes} {}", pipelines.unwrap_or("*"));
    Ok((token, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_for(token: &str, rest: &str) -> String {
        format!(
            "sha256:{} {rest}",
            hex::encode(Sha256::digest(token.as_bytes()))
        )
    }

    #[test]
    fn tokens_authenticate_by_hash_with_scopes_and_pipelines() {
        let text = format!(
            "# comment\n\nreader {}\ningester {}  # trailing\nboss {}\n",
            line_for("r", "read a,b"),
            line_for("i", "ingest,read"),
            line_for("b", "admin *")
        );
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.len(), 3);
        let r = tokens.authenticate("r").unwrap();
        assert!(r.has(Scope::Read) && !r.has(Scope::Ingest) && !r.has(Scope::Admin));
        assert!(r.may_touch("a") && !r.may_touch("c"));
        let b = tokens.authenticate("b").unwrap();
        assert!(b.has(Scope::Ingest) && b.has(Scope::Read) && b.may_touch("anything"));
        assert!(tokens.authenticate("nope").is_none());
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(Tokens::parse("x sha256:zz read").unwrap_err().0, 1);
        assert!(
            Tokens::parse(&format!("\nx {}", line_for("t", "write")))
                .unwrap_err()
                .1
                .contains("write")
        );
        assert!(
            Tokens::parse("x md5:00 read")
                .unwrap_err()
                .1
                .contains("sha256")
        );
        assert!(Tokens::parse("only-a-name").is_err());
    }

    #[test]
    fn a_new_token_matches_its_line() {
        let (token, line) = new_token("ci", "read,ingest", Some("clicks")).unwrap();
        let tokens = Tokens::parse(&line).unwrap();
        let p = tokens.authenticate(&token).unwrap();
        assert_eq!(p.name, "ci");
        assert!(p.may_touch("clicks") && !p.may_touch("other") && !p.has(Scope::Admin));
        assert!(new_token("two words", "read", None).is_err());
        assert!(new_token("x", "root", None).is_err());
    }
}
