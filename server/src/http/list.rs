//! Lists that behave the same everywhere: `limit` (1 to 1000, 100 by default) and an
//! opaque `cursor`, answered as `{items, next_cursor}`. A cursor names the list it came
//! from; one that does not decode, or comes from another list, is a 400, as is any
//! query parameter a list does not know (each list's query type denies unknown fields).

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::store::Page;

/// Most items in one page.
const MAX_LIMIT: i64 = 1000;
/// Items in a page when `limit` is not given.
const DEFAULT_LIMIT: i64 = 100;

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct List<T> {
    /// The page's items.
    pub(super) items: Vec<T>,
    /// Give it as `cursor` for the next page; none when this page is the last.
    pub(super) next_cursor: Option<String>,
}

/// The page asked of one list: the store's page (the cursor decoded to the last key)
/// and the list's name, which its cursors carry.
pub(super) struct Paging {
    list: &'static str,
    page: Page,
}

impl Paging {
    /// Reads `limit` and `cursor` for the list `list`.
    pub(super) fn new(
        list: &'static str,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(bad(
                "invalid_limit",
                format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
            ));
        }
        let cursor = cursor.map(|c| decode(list, c)).transpose()?;
        Ok(Self {
            list,
            page: Page { limit, cursor },
        })
    }

    /// The same for a list keyed by a number (a log's or a stream's ids): its cursors
    /// hold one.
    pub(super) fn numbered(
        list: &'static str,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        let paging = Self::new(list, limit, cursor)?;
        match (cursor, paging.after_id()) {
            (Some(given), None) => Err(refused(list, given)),
            _ => Ok(paging),
        }
    }

    /// The id after which a numbered list's page starts (none: from the start).
    pub(super) fn after_id(&self) -> Option<i64> {
        self.page.cursor.as_deref().and_then(|c| c.parse().ok())
    }

    /// The page for the store.
    pub(super) fn page(&self) -> &Page {
        &self.page
    }

    /// The answer: `items` shown through `view`, and a cursor after the last one when
    /// the page is full (`key` gives an item's key in the store's order).
    pub(super) fn list<T, V>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
        view: impl Fn(T) -> V,
    ) -> List<V> {
        let full = i64::try_from(items.len()).is_ok_and(|n| n >= self.page.limit);
        let next_cursor = full
            .then(|| items.last().map(|last| encode(self.list, &key(last))))
            .flatten();
        List {
            items: items.into_iter().map(view).collect(),
            next_cursor,
        }
    }
}

/// `limit` and `cursor` alone, for lists without filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Items in a page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

impl PageQuery {
    /// The page asked of the list `list`.
    pub(super) fn paging(&self, list: &'static str) -> Result<Paging, ApiError> {
        Paging::new(list, self.limit, self.cursor.as_deref())
    }

    /// The page asked of the numbered list `list`.
    pub(super) fn numbered_paging(&self, list: &'static str) -> Result<Paging, ApiError> {
        Paging::numbered(list, self.limit, self.cursor.as_deref())
    }
}

fn encode(list: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}\n{key}"))
}

/// A cursor this list did not give out.
fn refused(list: &str, cursor: &str) -> ApiError {
    bad(
        "invalid_cursor",
        format!(
            "cursor {:?} is not one this list ({list}) gave out; start again without it",
            cursor.chars().take(64).collect::<String>()
        ),
    )
}

fn decode(list: &str, cursor: &str) -> Result<String, ApiError> {
    let refused = || refused(list, cursor);
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| refused())?;
    let text = String::from_utf8(bytes).map_err(|_| refused())?;
    match text.split_once('\n') {
        Some((from, key)) if from == list => Ok(key.to_owned()),
        _ => Err(refused()),
    }
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_works_only_for_the_list_that_gave_it_out() {
        let cursor = encode("devices", "UDID-7");
        assert_eq!(decode("devices", &cursor).ok().as_deref(), Some("UDID-7"));
        assert!(decode("apps", &cursor).is_err());
        for garbage in ["", "!!!", "garbage", "ZGV2aWNlcw", &cursor[1..]] {
            assert!(decode("devices", garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn limit_is_bounded_and_the_next_cursor_comes_only_with_a_full_page() {
        assert!(Paging::new("x", Some(0), None).is_err());
        assert!(Paging::new("x", Some(1001), None).is_err());
        let paging = Paging::new("x", Some(2), None).expect("valid");
        let full = paging.list(vec![1, 2], |n| n.to_string(), |n| n);
        assert_eq!(
            full.next_cursor.as_deref().map(|c| decode("x", c).ok()),
            Some(Some("2".to_owned()))
        );
        let short = paging.list(vec![1], |n| n.to_string(), |n| n);
        assert!(short.next_cursor.is_none());
    }
}
