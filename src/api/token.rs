//! `GET /v1/token`: what the presented token may do, so that a client (the dashboard) can hide
//! what it would be refused, instead of probing every endpoint. It says nothing about other
//! tokens and never echoes the token itself.

use super::AppState;
use crate::auth::{Principal, Scope};
use axum::Json;
use axum::extract::Extension;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_token))
}

/// The caller's access.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// `open` (no tokens file: everything is allowed) or `token`.
    pub access: &'static str,
    /// The token's name in the tokens file; null when access is open.
    pub name: Option<String>,
    /// Scopes the caller has, from `ingest`, `read`, `admin` (admin implies the others, and is
    /// listed with them).
    pub scopes: Vec<&'static str>,
}

impl TokenInfo {
    /// The answer for a principal, or for open access (`None`).
    pub fn of(principal: Option<&Principal>) -> TokenInfo {
        let all = [Scope::Ingest, Scope::Read, Scope::Admin];
        match principal {
            None => TokenInfo {
                access: "open",
                name: None,
                scopes: all.iter().map(|s| s.as_str()).collect(),
            },
            Some(p) => TokenInfo {
                access: "token",
                name: Some(p.name.clone()),
                scopes: all
                    .iter()
                    .filter(|s| p.has(**s))
                    .map(|s| s.as_str())
                    .collect(),
            },
        }
    }
}

/// The caller's token: name and scopes
///
/// Any known token may ask (no scope is needed); without a tokens file the answer is `open`
/// with every scope.
#[utoipa::path(get, path = "/v1/token", tag = "operations",
    responses((status = 200, description = "What the presented token may do", body = TokenInfo)))]
async fn get_token(principal: Option<Extension<Principal>>) -> Json<TokenInfo> {
    Json(TokenInfo::of(principal.as_ref().map(|p| &p.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tokens;

    #[test]
    fn open_access_has_every_scope() {
        let info = TokenInfo::of(None);
        assert_eq!(info.access, "open");
        assert_eq!(info.name, None);
        assert_eq!(info.scopes, ["ingest", "read", "admin"]);
    }

    #[test]
    fn a_token_lists_only_its_scopes_and_admin_implies_the_rest() {
        let hash = |t: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
        let text = format!(
            "reader sha256:{} read\nboss sha256:{} admin\n",
            hash("r"),
            hash("b")
        );
        let tokens = Tokens::parse(&text).unwrap();
        let reader = TokenInfo::of(tokens.authenticate("r"));
        assert_eq!(reader.name.as_deref(), Some("reader"));
        assert_eq!(reader.scopes, ["read"]);
        let boss = TokenInfo::of(tokens.authenticate("b"));
        assert_eq!(boss.scopes, ["ingest", "read", "admin"]);
    }
}
