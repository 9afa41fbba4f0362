//! A bounded set of the latest items: membership is a hash lookup, and past its capacity the
//! oldest item is forgotten first. Rooms remember the ids each session sent with it, and
//! connections the relayed messages they wrote, so a repeat costs one lookup, not a scan.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// The latest `capacity` distinct items, oldest first. An empty one is two words: most
/// connections and sessions never see a message, and they are most of a node's memory.
#[derive(Clone, Debug)]
pub struct Recent<T: Eq + Hash + Clone> {
    items: Option<Box<Items<T>>>,
    capacity: usize,
}

#[derive(Clone, Debug)]
struct Items<T: Eq + Hash + Clone> {
    order: VecDeque<T>,
    members: HashSet<T>,
}

impl<T: Eq + Hash + Clone> Recent<T> {
    /// An empty set that keeps at most `capacity` items (it allocates nothing until used).
    pub fn new(capacity: usize) -> Recent<T> {
        Recent { items: None, capacity: capacity.max(1) }
    }

    /// Whether `item` is among the latest.
    pub fn contains(&self, item: &T) -> bool {
        self.items.as_ref().is_some_and(|i| i.members.contains(item))
    }

    /// Remembers `item` as the newest; false (and nothing changes) when it is known already.
    pub fn insert(&mut self, item: T) -> bool {
        let items =
            self.items.get_or_insert_with(|| Box::new(Items { order: VecDeque::new(), members: HashSet::new() }));
        if items.members.contains(&item) {
            return false;
        }
        items.members.insert(item.clone());
        items.order.push_back(item);
        while items.order.len() > self.capacity {
            if let Some(old) = items.order.pop_front() {
                items.members.remove(&old);
            }
        }
        true
    }

    /// The items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().flat_map(|i| i.order.iter())
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.items.as_ref().map_or(0, |i| i.order.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_and_forgets_the_oldest() {
        let mut r = Recent::new(3);
        assert!(r.insert("a") && r.insert("b") && r.insert("c"));
        assert!(!r.insert("b"), "known already");
        assert!(r.insert("d"));
        assert!(!r.contains(&"a"), "the oldest went first");
        assert!(r.contains(&"b") && r.contains(&"d"));
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), ["b", "c", "d"]);
        assert!(r.insert("a"), "forgotten, so new again");
        assert_eq!(r.len(), 3);
    }
}
