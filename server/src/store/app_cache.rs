//! Apps by id, kept in memory by the SQLite store. Every device result and every
//! install handed out reads its app, while apps change only by a sync, a license count
//! or an admin's install timeout, all written through the same store (a SQLite database
//! has one server). Each such write empties the cache once it is done; a read that began
//! before a write never fills the cache with what it saw, so a reader never gets an app
//! older than the last write it could have seen.

use std::collections::HashMap;
use std::sync::Mutex;

use super::AppRecord;

/// Most apps kept; past this the cache starts over (a store holds far fewer apps, and
/// an id that names no app is never kept).
const MOST: usize = 10_000;

/// The cache.
#[derive(Debug, Default)]
pub(super) struct AppCache(Mutex<Kept>);

#[derive(Debug, Default)]
struct Kept {
    /// Counts the writes that emptied the cache.
    generation: u64,
    apps: HashMap<String, AppRecord>,
}

impl AppCache {
    /// The app, if kept.
    pub(super) fn get(&self, id: &str) -> Option<AppRecord> {
        self.lock().apps.get(id).cloned()
    }

    /// Where the cache stands before a read: pass it to [`Self::fill`].
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `app`, read after [`Self::generation`] returned `seen`, unless a write
    /// has emptied the cache since.
    pub(super) fn fill(&self, seen: u64, app: &AppRecord) {
        let mut kept = self.lock();
        if kept.generation != seen {
            return;
        }
        if kept.apps.len() >= MOST {
            kept.apps.clear();
        }
        kept.apps.insert(app.id.clone(), app.clone());
    }

    /// Empties the cache: call after every write of apps, whether it succeeded or not.
    pub(super) fn written(&self) {
        let mut kept = self.lock();
        kept.generation += 1;
        kept.apps.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, name: &str) -> AppRecord {
        AppRecord {
            id: id.into(),
            name: Some(name.into()),
            ..AppRecord::example()
        }
    }

    #[test]
    fn a_read_from_before_a_write_is_not_kept() {
        let cache = AppCache::default();
        let seen = cache.generation();
        cache.fill(seen, &app("a", "old"));
        assert_eq!(cache.get("a").and_then(|a| a.name).as_deref(), Some("old"));

        // A read begins, a write lands, the read ends with what it saw before.
        let seen = cache.generation();
        cache.written();
        assert!(cache.get("a").is_none(), "a write empties the cache");
        cache.fill(seen, &app("a", "old"));
        assert!(cache.get("a").is_none(), "the older read is not kept");

        let seen = cache.generation();
        cache.fill(seen, &app("a", "new"));
        assert_eq!(cache.get("a").and_then(|a| a.name).as_deref(), Some("new"));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = AppCache::default();
        let seen = cache.generation();
        for i in 0..=MOST {
            cache.fill(seen, &app(&format!("app-{i}"), "x"));
        }
        assert!(cache.lock().apps.len() <= MOST);
        assert!(cache.get(&format!("app-{MOST}")).is_some());
    }
}
