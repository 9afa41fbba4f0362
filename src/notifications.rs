//! Notifications: what a user is told about (an appointment booked, its call started...).
//! Written with the change that causes them (`store/notifications.rs`, with a
//! `notification.created` event for the bus and webhooks), then pushed at once to every open
//! connection of their user, on any node, as `{"type":"notification","notification":{...}}`.

use crate::app::App;
use crate::store::notifications::Notification;
use serde_json::json;

/// The frame a notification is pushed in (without `seq`).
pub fn frame(n: &Notification) -> String {
    json!({"type": "notification", "notification": n}).to_string()
}

/// Pushes stored notifications to their users' open connections.
pub fn push(app: &App, written: &[Notification]) {
    for n in written {
        app.edge.to_user(&n.user_id, &frame(n));
        metrics::counter!("switchboard_notifications_total", "kind" => n.kind.clone()).increment(1);
    }
}
