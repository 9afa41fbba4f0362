// A call on a three-node cluster (PostgreSQL over its Unix socket, which the loopback-only
// network namespace still reaches): the room's node is killed, and the pages come back
// without a reload. Bob's page, connected to the room's node, reconnects to another node and
// resumes his session; Alice's page, on a survivor, keeps its socket while the room moves.
// The console of a survivor shows the nodes and the room's new node.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { launchBrowser, newPage, remoteFrames, remoteVideoFlows, startNode, until } from "./harness.mjs";

const SOCKET_DIR = process.env.SWITCHBOARD_TEST_PG_SOCKET_DIR ?? "/var/run/postgresql";
const SECRET = "browser-cluster-test-secret-0123456789";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

function psql(sql) {
  return execFileSync("psql", ["-h", SOCKET_DIR, "-U", "postgres", "-d", "postgres", "-Atc", sql]).toString();
}

async function clusterView(node) {
  const res = await fetch(`${node.url}/api/cluster`);
  return res.json();
}

async function eventually(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("the room's node is killed: both pages come back without a reload, one by resuming elsewhere", async (t) => {
  if (!existsSync(`${SOCKET_DIR}/.s.PGSQL.5432`)) {
    console.log(`SKIPPED: no PostgreSQL socket in ${SOCKET_DIR}`);
    t.skip("no PostgreSQL");
    return;
  }
  const db = `sb_test_browser_${process.pid}_${Date.now()}`;
  psql(`CREATE DATABASE ${db}`);
  const url = `postgres://postgres@localhost/${db}?host=${SOCKET_DIR}`;
  const env = { SWITCHBOARD_AUTH_SECRET: SECRET };
  const nodes = [];
  try {
    const member = async (id, seeds) => {
      const args = ["--node-id", id, "--cluster-addr", "127.0.0.1:0", "--database-url", url];
      if (seeds.length) args.push("--seeds", seeds.join(","));
      const node = await startNode({ args, env });
      node.id = id;
      node.clusterAddr = /cluster_addr="?([0-9.:]+)/.exec(node.log())?.[1];
      nodes.push(node);
      return node;
    };
    const n1 = await member("n1", []);
    await member("n2", [n1.clusterAddr]);
    await member("n3", [n1.clusterAddr]);
    await eventually("three members up", async () => {
      const v = await clusterView(n1);
      return v.members.filter((m) => m.state === "up").length === 3;
    });

    const room = "browser-failover";
    const others = (node) => nodes.filter((n) => n !== node).map((n) => `&node=${encodeURIComponent(n.url)}`).join("");
    const alice = await newPage(browser);
    await alice.goto(`${n1.url}/call?room=${room}&name=Alice${others(n1)}`);
    await until(alice, () => document.body.dataset.state === "joined");
    const ownerId = await eventually("the room's node", async () => {
      const v = await clusterView(n1);
      return v.rooms.find((r) => r.roomId === room)?.nodeId;
    });
    const owner = nodes.find((n) => n.id === ownerId);
    const bob = await newPage(browser);
    await bob.goto(`${owner.url}/call?room=${room}&name=Bob${others(owner)}`);
    await until(bob, () => document.body.dataset.state === "joined");
    await remoteVideoFlows(alice);
    await remoteVideoFlows(bob);

    const before = [await remoteFrames(alice), await remoteFrames(bob)];
    const offersBefore = await alice.evaluate(() => {
      window.__resumed = [];
      window.switchboardCall.on("peer_resumed", (e) => window.__resumed.push(e));
      const link = [...window.switchboardCall.links.values()][0];
      return link.offersSent + link.offersReceived;
    });
    await owner.kill();
    // Bob's socket was on the dead node: he reconnects to another one and resumes.
    await until(bob, () => document.body.dataset.reconnect === "resumed");
    await until(bob, () => document.body.dataset.state === "joined");
    // When the room tells Alice that Bob came back on a new connection, ICE restarts between
    // them (a new offer, from whichever side: the impolite one restarts at once, the polite one
    // if no offer came first). (Whether it says so depends on which node the room and Bob land on.)
    const resumed = await until(alice, () => window.__resumed.length > 0 && window.__resumed, undefined, 15_000)
      .then((h) => h.jsonValue())
      .catch(() => []);
    console.log(`Alice was told: ${JSON.stringify(resumed)}`);
    if (resumed.some((e) => e.iceRestart)) {
      await until(
        alice,
        (n) => {
          const link = [...window.switchboardCall.links.values()][0];
          return link.offersSent + link.offersReceived > n;
        },
        offersBefore,
      );
    }
    // Media never went through the nodes: it kept flowing.
    await remoteVideoFlows(alice, before[0]);
    await remoteVideoFlows(bob, before[1]);
    // Signaling works again, both ways, through the room's new node.
    await alice.fill("#chat-input", "after the failover");
    await alice.press("#chat-input", "Enter");
    await bob.fill("#chat-input", "still with you");
    await bob.press("#chat-input", "Enter");
    for (const page of [alice, bob]) {
      await until(page, () => {
        const lines = [...document.querySelectorAll("#chat-log li")].map((li) => li.textContent);
        return lines.includes("Alice: after the failover") && lines.includes("Bob: still with you");
      });
    }
    await alice.click("#mute");
    await until(bob, () => document.querySelector(".tile.remote")?.dataset.audioMuted === "true");

    // A survivor's console: the dead node is down, the room lives on a survivor.
    const survivor = nodes.find((n) => n !== owner);
    const operator = await newPage(browser);
    await operator.goto(`${survivor.url}/console`);
    await until(operator, () => document.body.dataset.state === "live");
    await until(operator, (id) => document.querySelector(`#members tr[data-node="${id}"]`)?.dataset.health === "down", ownerId);
    const newOwner = await until(
      operator,
      ({ room, dead }) => {
        const node = document.querySelector(`#rooms tr[data-room="${room}"]`)?.dataset.node;
        return node && node !== dead ? node : null;
      },
      { room, dead: ownerId },
    );
    assert.notEqual(await newOwner.jsonValue(), ownerId);
    assert.equal(await operator.locator("#members tbody tr").count(), 3);
  } finally {
    for (const n of nodes) await n.stop();
    try {
      psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    } catch {
      // CI drops leftover test databases at its start.
    }
  }
});
