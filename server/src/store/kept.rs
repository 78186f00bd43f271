//! Reads the stores keep in memory: apps by id (every device result and every install
//! handed out reads its app) and which enrollment a certificate is bound to (every
//! device request asks). Each write of either through the store empties its cache once
//! it is done, and a read that began before a write never fills the cache with what it
//! saw, so a reader never gets a value older than the last write it could have seen.
//!
//! A SQLite database has one server, so its own writes are all there are. On
//! PostgreSQL other replicas write too: the database tells every replica of each
//! change (`kept_postgres`), and a cache is paused, keeping and answering nothing,
//! whenever the replica is not hearing of them.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most values kept; past this the cache starts over (a key that names nothing is
/// never kept, so only real apps and enrollments fill it).
const MOST: usize = 100_000;

/// One cache of reads by key.
#[derive(Debug)]
pub(super) struct Kept<V>(Mutex<Values<V>>);

#[derive(Debug)]
struct Values<V> {
    /// Counts the writes that emptied the cache, and its pauses and resumptions.
    generation: u64,
    /// Whether the cache keeps and answers anything.
    running: bool,
    values: HashMap<String, V>,
}

impl<V> Default for Kept<V> {
    fn default() -> Self {
        Self(Mutex::new(Values {
            generation: 0,
            running: true,
            values: HashMap::new(),
        }))
    }
}

impl<V> Kept<V> {
    /// A cache that keeps nothing until [`Self::resume`].
    pub(super) fn paused() -> Self {
        let kept = Self::default();
        kept.pause();
        kept
    }

    /// Empties the cache and keeps nothing until [`Self::resume`]: the writes it
    /// would have to hear of may go unheard.
    pub(super) fn pause(&self) {
        let mut kept = self.lock();
        kept.generation += 1;
        kept.running = false;
        kept.values.clear();
    }

    /// Keeps values again, starting empty: from here on every write is heard of.
    pub(super) fn resume(&self) {
        let mut kept = self.lock();
        kept.generation += 1;
        kept.running = true;
        kept.values.clear();
    }

    /// Whether the cache keeps and answers values (not paused).
    pub(super) fn running(&self) -> bool {
        self.lock().running
    }

    /// Empties the cache: call after every write of what it keeps, whether it
    /// succeeded or not.
    pub(super) fn written(&self) {
        let mut kept = self.lock();
        kept.generation += 1;
        kept.values.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Values<V>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<V: Clone> Kept<V> {
    /// The value of `key`: the kept one, or what `read` reads, which is kept unless a
    /// write, a pause or a resumption came between the start of the read and its end
    /// (nothing is kept of a key that names nothing).
    pub(super) async fn get_or_read<E>(
        &self,
        key: &str,
        read: impl std::future::Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<V>, E> {
        if let Some(value) = self.get(key) {
            return Ok(Some(value));
        }
        let seen = self.generation();
        let value = read.await?;
        if let Some(value) = &value {
            self.fill(seen, key, value);
        }
        Ok(value)
    }

    /// The value of `key`, if kept.
    fn get(&self, key: &str) -> Option<V> {
        let kept = self.lock();
        if !kept.running {
            return None;
        }
        kept.values.get(key).cloned()
    }

    /// Where the cache stands before a read: pass it to [`Self::fill`].
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps `value` of `key`, read after [`Self::generation`] returned `seen`, unless
    /// a write has emptied the cache since.
    fn fill(&self, seen: u64, key: &str, value: &V) {
        let mut kept = self.lock();
        if kept.generation != seen || !kept.running {
            return;
        }
        if kept.values.len() >= MOST {
            kept.values.clear();
        }
        kept.values.insert(key.to_owned(), value.clone());
    }

    /// Runs `write`, a write of what this cache keeps, then empties the cache.
    pub(super) async fn writing<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        let written = write.await;
        self.written();
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AppRecord;

    fn app(id: &str, name: &str) -> AppRecord {
        AppRecord {
            id: id.into(),
            name: Some(name.into()),
            ..AppRecord::example()
        }
    }

    fn fill(cache: &Kept<AppRecord>, seen: u64, app: &AppRecord) {
        cache.fill(seen, &app.id, app);
    }

    #[test]
    fn a_read_from_before_a_write_is_not_kept() {
        let cache = Kept::default();
        let seen = cache.generation();
        fill(&cache, seen, &app("a", "old"));
        assert_eq!(cache.get("a").and_then(|a| a.name).as_deref(), Some("old"));

        // A read begins, a write lands, the read ends with what it saw before.
        let seen = cache.generation();
        cache.written();
        assert!(cache.get("a").is_none(), "a write empties the cache");
        fill(&cache, seen, &app("a", "old"));
        assert!(cache.get("a").is_none(), "the older read is not kept");

        let seen = cache.generation();
        fill(&cache, seen, &app("a", "new"));
        assert_eq!(cache.get("a").and_then(|a| a.name).as_deref(), Some("new"));
    }

    #[tokio::test]
    async fn a_value_read_is_kept_unless_a_write_came_between() {
        let cache = Kept::default();
        let reads = std::cell::Cell::new(0);
        let read = |name: &'static str| {
            reads.set(reads.get() + 1);
            async move { Ok::<_, ()>(Some(app("a", name))) }
        };
        let name = |v: Result<Option<AppRecord>, ()>| v.ok().flatten().and_then(|a| a.name);
        assert_eq!(
            name(cache.get_or_read("a", read("one")).await).as_deref(),
            Some("one")
        );
        assert_eq!(
            name(cache.get_or_read("a", read("two")).await).as_deref(),
            Some("one"),
            "the kept value answers"
        );
        // A write lands while a read is under way: what the read saw is not kept.
        cache.written();
        let during = async {
            let value = read("three").await;
            cache.written();
            value
        };
        assert_eq!(
            name(cache.get_or_read("a", during).await).as_deref(),
            Some("three")
        );
        assert!(
            cache.get("a").is_none(),
            "a read overtaken by a write is not kept"
        );
        let nothing = async { Ok::<Option<AppRecord>, ()>(None) };
        assert!(matches!(cache.get_or_read("b", nothing).await, Ok(None)));
        assert!(
            cache.get("b").is_none(),
            "nothing is kept of a key naming nothing"
        );
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn a_paused_cache_keeps_nothing_and_resumes_empty() {
        let cache = Kept::default();
        let seen = cache.generation();
        fill(&cache, seen, &app("a", "old"));
        // A read begins before the pause and ends after it.
        let before_pause = cache.generation();
        cache.pause();
        assert!(cache.get("a").is_none(), "a pause empties the cache");
        let seen = cache.generation();
        fill(&cache, seen, &app("a", "paused"));
        assert!(cache.get("a").is_none(), "a paused cache keeps nothing");

        cache.resume();
        fill(&cache, before_pause, &app("a", "old"));
        fill(&cache, seen, &app("a", "paused"));
        assert!(
            cache.get("a").is_none(),
            "reads begun before the cache resumed are not kept"
        );
        let seen = cache.generation();
        fill(&cache, seen, &app("a", "new"));
        assert_eq!(cache.get("a").and_then(|a| a.name).as_deref(), Some("new"));
        assert!(Kept::<AppRecord>::paused().get("a").is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = Kept::default();
        let seen = cache.generation();
        for i in 0..=MOST {
            cache.fill(seen, &format!("app-{i}"), &i);
        }
        assert!(cache.lock().values.len() <= MOST);
        assert!(cache.get(&format!("app-{MOST}")).is_some());
    }
}
