//! Small pages for people: `/` (what this server is, with links to the docs, the document, the
//! dashboard and the metrics) and `/problems/{code}` (the documentation of one problem type,
//! taken from docs/problems.md, so that every problem's `type` URI resolves).

use super::AppState;
use super::problem::ApiError;
use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// docs/problems.md, compiled in: one `## \`code\`` section per problem code.
pub const PROBLEMS_MD: &str = include_str!("../../docs/problems.md");

/// The routes of the pages (not part of the API document).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/problems/{code}", get(problem_page))
}

const HTML: &str = "text/html; charset=utf-8";

async fn home() -> Response {
    let version = env!("CARGO_PKG_VERSION");
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eddy</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto">
<h1>eddy {version}</h1>
<p>A stateful stream-processing service: keyed state, event time, checkpoints.</p>
<ul>
<li><a href="/ui">/ui</a>: the dashboard</li>
<li><a href="/docs">/docs</a>: the API, to read and try</li>
<li><a href="/openapi.json">/openapi.json</a>: the OpenAPI document</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/readyz">/readyz</a>: readiness</li>
</ul>
</body></html>
"#
    );
    ([(header::CONTENT_TYPE, HTML)], page).into_response()
}

async fn problem_page(Path(code): Path<String>) -> Result<Response, ApiError> {
    let section = problem_section(PROBLEMS_MD, &code).ok_or_else(|| ApiError::RouteNotFound {
        path: format!("/problems/{code}"),
    })?;
    let paragraphs: String = section
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>\n", inline_markdown(p)))
        .collect();
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{code} · eddy problem</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto">
<h1><code>{code}</code></h1>
{paragraphs}<p><a href="/docs">The API</a></p>
</body></html>
"#,
        code = escape(&code),
    );
    Ok(([(header::CONTENT_TYPE, HTML)], page).into_response())
}

/// The text of the `## \`code\`` section of `doc`, without its heading.
pub fn problem_section<'a>(doc: &'a str, code: &str) -> Option<&'a str> {
    let heading = format!("\n## `{code}`\n");
    let start = doc.find(&heading)? + heading.len();
    let rest = &doc[start..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `**bold**` and `` `code` `` of a paragraph as HTML, everything else escaped.
fn inline_markdown(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(text).split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<code>{part}</code>"));
            continue;
        }
        for (j, piece) in part.split("**").enumerate() {
            match j % 2 {
                1 => out.push_str(&format!("<strong>{piece}</strong>")),
                _ => out.push_str(piece),
            }
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_runs_to_the_next_heading() {
        let doc = "# P\n\n## `a`\n\n**400.** One.\n\n## `b`\n\nTwo.\n";
        assert_eq!(problem_section(doc, "a").unwrap().trim(), "**400.** One.");
        assert_eq!(problem_section(doc, "b").unwrap().trim(), "Two.");
        assert_eq!(problem_section(doc, "c"), None);
    }

    #[test]
    fn inline_markdown_escapes_and_marks_code_and_bold() {
        assert_eq!(
            inline_markdown("**409** `<id>` & more"),
            "<strong>409</strong> <code>&lt;id&gt;</code> &amp; more"
        );
    }
}
