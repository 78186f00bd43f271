//! Apple's paged lists (Get Assets, Get Assignments, Get Users): `pageIndex` from 0,
//! `currentPageIndex`, `nextPageIndex` (absent on the last page), `size`, `totalPages`
//! and `versionId`; a page out of range is 9650. Assignments and users also answer
//! `sinceVersionId` with only the records changed since that version.
//!
//! Versions: the stand-in notices a change when a list is read (it compares each
//! record with what it saw last), and gives every record that changed since the last
//! read a new version number. Any version a client was given is older than every
//! change after it, which is all `sinceVersionId` needs.

use std::collections::BTreeMap;

/// Version numbers of the records of one list.
#[derive(Debug, Default)]
pub struct Versions {
    current: u64,
    records: BTreeMap<String, (u64, String)>,
}

impl Versions {
    /// Takes the list as it is now: `(key, content)` of every record. Records new or
    /// changed since the last read get a new version; records gone are forgotten.
    pub fn refresh(&mut self, now: impl IntoIterator<Item = (String, String)>) {
        let mut next = BTreeMap::new();
        let mut changed = false;
        let version = self.current + 1;
        for (key, content) in now {
            let at = match self.records.get(&key) {
                Some((at, seen)) if *seen == content => *at,
                _ => {
                    changed = true;
                    version
                }
            };
            next.insert(key, (at, content));
        }
        if changed || next.len() != self.records.len() {
            self.current = version;
        }
        self.records = next;
    }

    /// The list's version now (`versionId`).
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Whether the record `key` changed after version `since`.
    pub fn changed_since(&self, key: &str, since: u64) -> bool {
        self.records.get(key).is_some_and(|(at, _)| *at > since)
    }
}

/// One page of a list, or Apple's refusal.
#[derive(Debug)]
pub struct Page<T> {
    /// The records of this page.
    pub items: Vec<T>,
    /// This page.
    pub index: usize,
    /// Pages in all (at least one, even when empty).
    pub total: usize,
}

/// Why a page cannot be given: Apple's error number and message.
pub type PageError = (i64, &'static str);

/// Cuts page `page_index` (Apple's query text; none is page 0) of `size` records.
pub fn page<T>(all: Vec<T>, page_index: Option<&str>, size: usize) -> Result<Page<T>, PageError> {
    let Ok(index) = page_index.unwrap_or("0").parse::<usize>() else {
        return Err((9602, "Invalid argument: pageIndex must be an integer"));
    };
    let size = size.max(1);
    let total = all.len().div_ceil(size).max(1);
    if index >= total {
        return Err((9650, "Page index out of range"));
    }
    let items = all.into_iter().skip(index * size).take(size).collect();
    Ok(Page {
        items,
        index,
        total,
    })
}

/// Reads `sinceVersionId`: none, or a version this list has given (else 9721).
pub fn since(text: Option<&str>, versions: &Versions) -> Result<Option<u64>, PageError> {
    match text {
        None => Ok(None),
        Some(t) => match t.parse::<u64>() {
            Ok(v) if v <= versions.current() => Ok(Some(v)),
            _ => Err((9721, "Invalid versionId")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn versions_move_only_with_changes() {
        let mut v = Versions::default();
        v.refresh(list(&[("a", "1"), ("b", "1")]));
        let first = v.current();
        v.refresh(list(&[("a", "1"), ("b", "1")]));
        assert_eq!(v.current(), first, "nothing changed");
        v.refresh(list(&[("a", "1"), ("b", "2"), ("c", "1")]));
        assert!(v.current() > first);
        assert!(!v.changed_since("a", first));
        assert!(v.changed_since("b", first) && v.changed_since("c", first));
        let second = v.current();
        v.refresh(list(&[("a", "1")]));
        assert!(v.current() > second, "a removal is a change");
    }

    #[test]
    fn pages_and_their_errors() {
        let p = page((0..250).collect::<Vec<_>>(), Some("2"), 100).unwrap();
        assert_eq!((p.items.len(), p.index, p.total), (50, 2, 3));
        assert_eq!(
            page((0..250).collect::<Vec<_>>(), Some("3"), 100)
                .unwrap_err()
                .0,
            9650
        );
        assert_eq!(page(Vec::<u8>::new(), None, 100).unwrap().total, 1);
        assert_eq!(page(Vec::<u8>::new(), Some("x"), 100).unwrap_err().0, 9602);
        let v = Versions::default();
        assert_eq!(since(Some("9"), &v).unwrap_err().0, 9721);
        assert_eq!(since(Some("0"), &v).unwrap(), Some(0));
    }
}
