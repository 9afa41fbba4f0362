//! Topic names on the event bus (documented in `docs/events.md`) and MQTT filter matching.

/// `switchboard/{cluster}/events/{kind}`: one outbox event.
pub fn event(cluster: &str, kind: &str) -> String {
    format!("switchboard/{cluster}/events/{kind}")
}

/// `switchboard/{cluster}/events/#`: every outbox event of a cluster.
pub fn all_events(cluster: &str) -> String {
    format!("switchboard/{cluster}/events/#")
}

/// `switchboard/{cluster}/jobs/snapshot`: snapshot comparisons for CV workers.
pub fn snapshot_jobs(cluster: &str) -> String {
    format!("switchboard/{cluster}/jobs/snapshot")
}

/// The shared subscription CV workers take jobs through: each job goes to one of them.
pub fn snapshot_jobs_shared(cluster: &str) -> String {
    format!("$share/cv/{}", snapshot_jobs(cluster))
}

/// `switchboard/{cluster}/results/snapshot`: what the workers found.
pub fn snapshot_results(cluster: &str) -> String {
    format!("switchboard/{cluster}/results/snapshot")
}

/// Whether `topic` matches `filter` (`+` one level, `#` the rest; a shared subscription
/// `$share/{group}/{filter}` matches what its filter does).
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((_group, f)) => f,
            None => return false,
        },
        None => filter,
    };
    // Topics starting with `$` are not matched by filters starting with a wildcard.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            level => {
                if t.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("switchboard/c/events/#", "switchboard/c/events/participant.joined"));
        assert!(matches("switchboard/+/events/#", "switchboard/c/events/a"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("$share/cv/switchboard/c/jobs/snapshot", "switchboard/c/jobs/snapshot"));
        assert!(!matches("$share/cv", "cv"));
        assert!(!matches("#", "$SYS/broker"));
        assert_eq!(event("c", "session.created"), "switchboard/c/events/session.created");
        assert!(matches(&all_events("c"), &event("c", "session.created")));
        assert!(!matches(&all_events("c"), &event("d", "session.created")));
        assert!(matches(&snapshot_jobs_shared("c"), &snapshot_jobs("c")));
        assert!(!matches(&all_events("c"), &snapshot_results("c")));
    }
}
