//! The page shell: the embedded stylesheet and scripts (nothing is fetched from
//! elsewhere), the navigation, and who is signed in.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// htmx's settings: no inline styles (the CSP allows none), no `eval`.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(PreEscaped(HTMX_CONFIG));
            title { (title) " · Orchard" }
            link rel="stylesheet" href=(super::asset_path("console.css"));
            script src=(super::asset_path("htmx.min.js")) defer {}
            script src=(super::asset_path("sse.min.js")) defer {}
        }
    }
}

/// A page without navigation (sign-in, refusals).
pub(super) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (body) }
        }
    }
}

/// Who a page is shown to: the signed-in token's name and role, and the session's CSRF
/// token for the sign-out form.
pub(super) struct Viewer<'a> {
    pub(super) name: &'a str,
    pub(super) role: &'a str,
    pub(super) csrf: &'a str,
}

/// A page of the signed-in console.
pub(super) fn page(viewer: Viewer<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    nav aria-label="Console" {
                        a href="/console" class="brand" { "Orchard" }
                        a href="/console" { "Dashboard" }
                        a href="/console/devices" { "Devices" }
                        a href="/console/groups" { "Groups" }
                        a href="/console/users" { "Users" }
                        a href="/console/audit" { "Audit log" }
                    }
                    div class="who" {
                        span { (viewer.name) " · " (viewer.role) }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A license bar: used of total, as a meter people and screen readers can read.
pub(super) fn license_bar(used: i64, total: i64, available: i64) -> Markup {
    html! {
        div class="licenses" {
            meter min="0" max=(total.max(1)) value=(used) aria-label="licenses used" {}
            span { (used) " used of " (total) ", " (available) " available" }
        }
    }
}

/// A value as it goes into a URL (path segment or query).
pub(super) fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Rows in a page of a console table.
pub(super) const PAGE_ROWS: i64 = 50;

/// The store's page of a table: [`PAGE_ROWS`] after the key `after`.
pub(super) fn table_page(after: Option<String>) -> crate::store::Page {
    crate::store::Page {
        limit: PAGE_ROWS,
        cursor: after,
    }
}

/// The key after which the next page starts, when this page is full.
pub(super) fn next_key<T>(rows: &[T], key: impl Fn(&T) -> String) -> Option<String> {
    (rows.len() as i64 >= PAGE_ROWS)
        .then(|| rows.last().map(key))
        .flatten()
}
