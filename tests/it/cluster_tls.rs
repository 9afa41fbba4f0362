//! Mutual TLS between nodes: three nodes with certificates of the cluster's CA form a full mesh
//! over TLS (the two that know only the seed find each other through the database) and carry a
//! call across nodes; a node with a certificate from another CA, and one without TLS, are
//! refused at the handshake and never become members.

use crate::cluster::{join_at, member_with, states, until};
use crate::support::{Node, fresh_postgres};
use std::path::Path;
use switchboard::tls::cluster::{ClusterTlsFiles, write_cluster_certs};
use switchboard_cluster::dialer::CLUSTER_SERVER_NAME;
use tokio_rustls::rustls::pki_types::ServerName;

fn tls_member(db: &str, id: &str, seeds: &[&Node], certs: &Path) -> (Node, tempfile::TempDir) {
    let file = |name: String| certs.join(name).to_str().expect("path").to_owned();
    let (cert, key, ca) = (file(format!("{id}.pem")), file(format!("{id}-key.pem")), file("ca.pem".into()));
    let flags = ["--cluster-tls-cert", &cert, "--cluster-tls-key", &key, "--cluster-ca", &ca];
    member_with(db, id, seeds, &[], &flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_link_over_mutual_tls_and_refuse_strangers() {
    let Some(db) = fresh_postgres("nodes_link_over_mutual_tls_and_refuse_strangers").await else { return };
    let ours = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    write_cluster_certs(ours.path(), &nodes, false).expect("cluster CA and node certificates");
    write_cluster_certs(theirs.path(), &["n4".to_owned()], false).expect("another CA");
    assert!(write_cluster_certs(ours.path(), &nodes, false).is_err(), "never overwritten without --force");

    let (n1, _d1) = tls_member(&db, "n1", &[], ours.path());
    let (n2, _d2) = tls_member(&db, "n2", &[&n1], ours.path());
    let (n3, _d3) = tls_member(&db, "n3", &[&n1], ours.path());
    let all_up = states(&[("n1", "up"), ("n2", "up"), ("n3", "up")]);
    for n in [&n1, &n2, &n3] {
        until(n, "every member up over TLS", |v| *v == all_up).await;
    }
    // A call across nodes: the join is routed over the links and the offer relayed back.
    let (mut alice, _) = join_at(n2.addr, "alice", "over-tls").await;
    let (mut bob, _) = join_at(n3.addr, "bob", "over-tls").await;
    alice.recv_type("peer_joined").await;
    alice.send(serde_json::json!({"type": "offer", "peerId": bob.peer_id, "sdp": "v=0 over tls"})).await;
    assert_eq!(bob.recv_type("offer").await["sdp"], "v=0 over tls");

    // The node link is under the same TLS: a peer that knows the cookie but dials in plain
    // TCP, or over TLS with a certificate of another CA, is refused; one of ours is let in.
    let link = crate::cluster::link_addr(&n1).await;
    let cookie = switchboard::config::DEV_COOKIE;
    let refusals = || n1.log().matches("refused a node link").count();
    let before = refusals();
    let mut plain = tokio::net::TcpStream::connect(link).await.expect("connect");
    let _ = switchboard_cluster::link::handshake::dial(&mut plain, "n9", "n1", cookie).await;
    assert!(crate::cluster::closed_by_peer(&mut plain).await, "a plain link is closed");
    n1.await_log("refused a node link", before).await;
    let file = |dir: &Path, name: &str| dir.join(name);
    let theirs_tls = ClusterTlsFiles {
        cert: file(theirs.path(), "n4.pem"),
        key: file(theirs.path(), "n4-key.pem"),
        ca: file(theirs.path(), "ca.pem"),
    }
    .load()
    .expect("their TLS");
    let before = refusals();
    let tcp = tokio::net::TcpStream::connect(link).await.expect("connect");
    let name = ServerName::try_from(CLUSTER_SERVER_NAME).expect("name");
    // Their certificate is checked by n1 (and n1's by them): the handshake fails either way.
    if let Ok(mut tls) = theirs_tls.connector.connect(name.clone(), tcp).await {
        assert!(crate::cluster::closed_by_peer(&mut tls).await, "a stranger's TLS link is closed");
    }
    n1.await_log("refused a node link", before).await;
    let ours_tls = ClusterTlsFiles {
        cert: file(ours.path(), "n3.pem"),
        key: file(ours.path(), "n3-key.pem"),
        ca: file(ours.path(), "ca.pem"),
    }
    .load()
    .expect("our TLS");
    let tcp = tokio::net::TcpStream::connect(link).await.expect("connect");
    let mut tls = ours_tls.connector.connect(name, tcp).await.expect("our certificate is accepted");
    switchboard_cluster::link::handshake::dial(&mut tls, "n3", "n1", cookie).await.expect("and the cookie");

    // A node whose certificate another CA issued is refused at the handshake.
    let before = n1.log().matches("Error establishing secure socket").count();
    let (n4, _d4) = tls_member(&db, "n4", &[&n1], theirs.path());
    n1.await_log("Error establishing secure socket", before).await;
    // And so is one that dials in plain TCP (allowed only in dev mode, which these are in).
    let before = n1.log().matches("Error establishing secure socket").count();
    let (n5, _d5) = member_with(&db, "n5", &[&n1], &[], &[]);
    n1.await_log("Error establishing secure socket", before).await;
    let v = crate::support::get_json(&n1.url("/api/cluster")).await;
    let members: Vec<&str> =
        v["members"].as_array().expect("members").iter().filter_map(|m| m["nodeId"].as_str()).collect();
    assert!(!members.contains(&"n4") && !members.contains(&"n5"), "strangers are not members: {v}");
    assert!(n4.log().contains("cannot reach seed") || n4.log().contains("handshake did not complete"), "{}", n4.log());
    drop((n4, n5));
}
