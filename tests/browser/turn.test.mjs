// Calls forced through TURN (`iceTransportPolicy: "relay"`): through the node's embedded TURN
// server, and through Debian's coturn given Switchboard's shared secret; an expired credential
// gets no relay from either.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { launchBrowser, newPage, remoteVideoFlows, startNode, tempDir, until } from "./harness.mjs";

const SECRET = "browser-turn-test-secret";
const COTURN = "/usr/bin/turnserver";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Two pages on `/call?relay=1`; resolves once video flows both ways. */
async function relayedCall(node, room) {
  const pages = [];
  for (const name of ["Alice", "Bob"]) {
    const page = await newPage(browser);
    await page.goto(`${node.url}/call?room=${room}&name=${name}&relay=1`);
    await until(page, () => document.body.dataset.state === "joined");
    pages.push(page);
  }
  for (const page of pages) await remoteVideoFlows(page);
  return pages;
}

/** The selected candidate pair's local candidate (type, and the TURN URL for a relay). */
function selectedLocalCandidate(page) {
  return page.evaluate(async () => {
    const [link] = window.switchboardCall.links.values();
    const stats = new Map();
    (await link.pc.getStats()).forEach((s) => stats.set(s.id, s));
    const transport = [...stats.values()].find((s) => s.type === "transport" && s.selectedCandidatePairId);
    const pair = stats.get(transport.selectedCandidatePairId);
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { type: local.candidateType, url: local.url ?? "", remoteType: remote.candidateType };
  });
}

/** In the page: what a relay-only connection given `server` gathers (candidates, errors). */
function gatherRelay(page, server) {
  return page.evaluate(async (server) => {
    const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: "relay" });
    const found = { relay: 0, errors: [] };
    pc.onicecandidate = (e) => {
      if (e.candidate?.type === "relay") found.relay += 1;
    };
    pc.onicecandidateerror = (e) => found.errors.push(e.errorCode);
    const done = new Promise((resolve) => {
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    });
    pc.createDataChannel("probe");
    await pc.setLocalDescription();
    await Promise.race([done, new Promise((r) => setTimeout(r, 20000))]);
    pc.close();
    return found;
  }, server);
}

function credential(expiry, user) {
  const username = `${expiry}:${user}`;
  return { username, credential: createHmac("sha1", SECRET).update(username).digest("base64") };
}

test("a relay-only call goes through the embedded TURN server; an expired credential gets no relay", async () => {
  const node = await startNode({ env: { SWITCHBOARD_TURN_SECRET: SECRET } });
  try {
    const [alice, bob] = await relayedCall(node, "relay-embedded");
    for (const page of [alice, bob]) {
      const c = await selectedLocalCandidate(page);
      assert.equal(c.type, "relay", JSON.stringify(c));
      assert.equal(c.remoteType, "relay", JSON.stringify(c));
    }
    const urls = (await alice.evaluate(() => window.switchboardCall.room.iceServers)).flatMap((s) => s.urls);
    const turnUrl = urls.find((u) => u.startsWith("turn:") && u.endsWith("transport=udp"));
    assert.ok(turnUrl, JSON.stringify(urls));
    // A credential Switchboard would have issued, but an hour ago for an hour that is over.
    const past = Math.floor(Date.now() / 1000) - 3600;
    const expired = await gatherRelay(alice, { urls: [turnUrl], ...credential(past, "mallory") });
    assert.equal(expired.relay, 0);
    assert.ok(expired.errors.includes(401), JSON.stringify(expired));
    // The same user with a credential still valid does get a relay: the refusal was the expiry.
    const valid = await gatherRelay(alice, { urls: [turnUrl], ...credential(past + 7200, "mallory") });
    assert.ok(valid.relay >= 1, JSON.stringify(valid));
  } finally {
    await node.stop();
  }
});

/** A port free for UDP and TCP alike (coturn cannot report one it picked). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

test("a relay-only call goes through coturn with Switchboard's credentials; an expired one is refused", async (t) => {
  if (!existsSync(COTURN)) {
    console.log(`SKIPPED: coturn is not installed (${COTURN} missing); apt-get install coturn`);
    t.skip("coturn is not installed");
    return;
  }
  const dir = tempDir("sb-coturn-");
  const port = await freePort();
  const coturn = spawn(COTURN, [
    "-n",
    "--listening-ip=127.0.0.1",
    "--relay-ip=127.0.0.1",
    `--listening-port=${port}`,
    "--use-auth-secret",
    `--static-auth-secret=${SECRET}`,
    "--realm=switchboard-coturn",
    "--no-cli",
    "--no-tls",
    "--no-dtls",
    "--fingerprint",
    "--no-multicast-peers",
    // Both pages relay from 127.0.0.1, so each one's relay address is a loopback peer of the
    // other's allocation; production configs deny such peers (deploy/coturn/turnserver.conf).
    "--allow-loopback-peers",
    `--userdb=${join(dir, "turndb")}`,
    `--pidfile=${join(dir, "turnserver.pid")}`,
    "--log-file=stdout",
    "--simple-log",
  ]);
  let coturnLog = "";
  coturn.stdout.on("data", (d) => (coturnLog += d));
  const config = join(dir, "switchboard.toml");
  const url = `turn:127.0.0.1:${port}?transport=udp`;
  writeFileSync(config, `[ice]\nturn_urls = ["${url}"]\n\n[turn]\nenabled = false\n`);
  const node = await startNode({ args: ["--config", config], env: { SWITCHBOARD_TURN_SECRET: SECRET } });
  try {
    const [alice, bob] = await relayedCall(node, "relay-coturn");
    for (const page of [alice, bob]) {
      const c = await selectedLocalCandidate(page);
      assert.equal(c.type, "relay", JSON.stringify(c));
      assert.match(c.url, new RegExp(`:${port}`), JSON.stringify(c));
    }
    const past = Math.floor(Date.now() / 1000) - 3600;
    const expired = await gatherRelay(alice, { urls: [url], ...credential(past, "mallory") });
    assert.equal(expired.relay, 0, coturnLog);
    assert.ok(expired.errors.includes(401), JSON.stringify(expired));
  } finally {
    await node.stop();
    coturn.kill("SIGKILL");
  }
});
