// Two people on the call page of one node, in a real Chromium with a fake camera and
// microphone: media both ways, mute seen by the other, chat both ways, the overlay pointer on
// both sides, a snapshot's report shown; two strangers paired by a lobby; a node restart both
// pages come back from (resuming their sessions) without a
// reload; a person whose camera permission is denied joins receive-only.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import {
  audioPacketsReceived,
  launchBrowser,
  newPage,
  remoteFrames,
  remoteVideoFlows,
  startNode,
  tempDir,
  until,
} from "./harness.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function twoOnACall(node, room) {
  const alice = await newPage(browser);
  const bob = await newPage(browser);
  await alice.goto(`${node.url}/call?room=${room}&name=Alice`);
  await until(alice, () => document.body.dataset.state === "joined");
  await bob.goto(`${node.url}/call?room=${room}&name=Bob`);
  await until(bob, () => document.body.dataset.state === "joined");
  return { alice, bob };
}

test("two pages make a call: media, mute, chat, pointer and a snapshot report", async () => {
  const node = await startNode();
  try {
    const { alice, bob } = await twoOnACall(node, "browser-call");

    // Media both ways: each page decodes the other's video and receives its audio.
    await remoteVideoFlows(alice);
    await remoteVideoFlows(bob);
    await until(alice, () => document.querySelector("#call-status").dataset.status === "active");
    for (const page of [alice, bob]) {
      await until(
        page,
        async () => {
          let packets = 0;
          for (const link of window.switchboardCall.links.values()) {
            (await link.pc.getStats()).forEach((s) => {
              if (s.type === "inbound-rtp" && s.kind === "audio") packets += s.packetsReceived ?? 0;
            });
          }
          return packets > 10;
        },
      );
    }
    assert.ok((await audioPacketsReceived(bob)) > 10);

    // Mute: Bob's page shows Alice muted.
    await alice.click("#mute");
    await until(bob, () => document.querySelector(".tile.remote")?.dataset.audioMuted === "true");
    await alice.click("#mute");
    await until(bob, () => document.querySelector(".tile.remote")?.dataset.audioMuted === "false");

    // The camera toggle: Bob's page shows Alice's camera off, then on again.
    await alice.click("#video");
    await until(bob, () => document.querySelector(".tile.remote")?.dataset.videoOff === "true");
    await alice.click("#video");
    await until(bob, () => document.querySelector(".tile.remote")?.dataset.videoOff === "false");

    // Screen sharing: the screen replaces the camera, and Bob's page says so.
    await alice.click("#share");
    await until(bob, () => /sharing screen/.test(document.querySelector(".tile.remote .flags")?.textContent));
    await alice.click("#share");
    await until(bob, () => !/sharing screen/.test(document.querySelector(".tile.remote .flags")?.textContent));

    // Stats: each page sends getStats() figures and shows the score the node gives them.
    for (const page of [alice, bob]) await until(page, () => document.querySelector("#quality").dataset.level !== "");

    // Chat both ways (each line once, on both pages).
    await alice.fill("#chat-input", "hello from Alice");
    await alice.press("#chat-input", "Enter");
    await bob.fill("#chat-input", "hi Alice, Bob here");
    await bob.press("#chat-input", "Enter");
    for (const page of [alice, bob]) {
      await until(page, () => {
        const lines = [...document.querySelectorAll("#chat-log li")].map((li) => li.textContent);
        return lines.includes("Alice: hello from Alice") && lines.includes("Bob: hi Alice, Bob here");
      });
      assert.equal(await page.locator("#chat-log li").count(), 2);
    }

    // The pointer: Alice points at Bob's video; it is drawn on her tile of Bob and over
    // Bob's own camera on his page.
    const box = await alice.locator(".tile.remote video").boundingBox();
    await alice.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.6);
    await alice.mouse.move(box.x + box.width * 0.32, box.y + box.height * 0.62);
    await until(alice, () => document.querySelector(".tile.remote").dataset.pointers === "1");
    await until(bob, () => document.querySelector("#local").dataset.pointers === "1");

    // A snapshot of Bob's video: its report (the first of its subject: the baseline) is shown.
    await alice.click("#snapshot");
    await until(alice, () => document.querySelector("#report").dataset.loaded === "true", undefined, 60_000);
    assert.equal(await alice.locator("#report").getAttribute("data-verdict"), "baseline");
    assert.match(await alice.locator("#report-facts").textContent(), /Bob-[0-9a-f]+-camera/);
  } finally {
    await node.stop();
  }
});

test("two strangers wait in a lobby, are paired, and call each other", async () => {
  const node = await startNode();
  try {
    const alice = await newPage(browser);
    const bob = await newPage(browser);
    await alice.goto(`${node.url}/call?lobby=browser-lobby&name=Alice&tags=chess`);
    await until(alice, () => document.body.dataset.state === "waiting" && !document.querySelector("#notice").hidden);
    assert.match(await alice.locator("#notice").textContent(), /Waiting for someone/);
    await bob.goto(`${node.url}/call?lobby=browser-lobby&name=Bob&tags=chess,go`);
    await until(alice, () => document.body.dataset.state === "joined");
    await until(bob, () => document.body.dataset.state === "joined");
    const rooms = await Promise.all([alice, bob].map((p) => p.evaluate(() => window.switchboardCall.room.roomId)));
    assert.equal(rooms[0], rooms[1], "one room for the pair");
    assert.match(rooms[0], /^lobby-browser-lobby-/);
    await remoteVideoFlows(alice);
    await remoteVideoFlows(bob);
  } finally {
    await node.stop();
  }
});

test("both pages reconnect after the node restarts, without a reload", async () => {
  const dataDir = tempDir();
  let node = await startNode({ dataDir });
  try {
    const { alice, bob } = await twoOnACall(node, "browser-restart");
    await remoteVideoFlows(alice);
    await remoteVideoFlows(bob);
    const addr = node.addr;
    await node.kill();
    await until(alice, () => document.body.dataset.state === "reconnecting");
    await until(bob, () => document.body.dataset.state === "reconnecting");
    assert.equal(await alice.locator("#banner").isVisible(), true);

    node = await startNode({ dataDir, addr });
    await until(alice, () => document.body.dataset.state === "joined");
    await until(bob, () => document.body.dataset.state === "joined");
    const how = await Promise.all([alice, bob].map((p) => p.evaluate(() => document.body.dataset.reconnect)));
    // The sessions outlived the crash: both pages resume them on the restarted node.
    assert.deepEqual(how, ["resumed", "resumed"], `after the restart: Alice ${how[0]}, Bob ${how[1]}`);
    // The call carries on: video flows again and chat reaches the other side.
    const a = await remoteFrames(alice);
    const b = await remoteFrames(bob);
    await remoteVideoFlows(alice, a);
    await remoteVideoFlows(bob, b);
    await alice.fill("#chat-input", "still here");
    await alice.press("#chat-input", "Enter");
    await until(bob, () => [...document.querySelectorAll("#chat-log li")].some((li) => li.textContent === "Alice: still here"));
    assert.equal(await bob.locator("#banner").isVisible(), false);
  } finally {
    await node.stop();
  }
});

test("a denied camera and microphone join receive-only, with a clear message", async () => {
  const node = await startNode();
  try {
    const alice = await newPage(browser);
    await alice.goto(`${node.url}/call?room=browser-denied&name=Alice`);
    await until(alice, () => document.body.dataset.state === "joined");
    const carol = await newPage(browser);
    await carol.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = async () => {
        throw new DOMException("Permission denied", "NotAllowedError");
      };
    });
    await carol.goto(`${node.url}/call?room=browser-denied&name=Carol`);
    await until(carol, () => document.body.dataset.state === "joined");
    assert.match(await carol.locator("#notice").textContent(), /permission was denied.*receive-only/);
    // Carol sends nothing but sees Alice.
    await remoteVideoFlows(carol);
    assert.equal(await carol.locator("#local").getAttribute("data-video"), "none");
  } finally {
    await node.stop();
  }
});

test("a poor link falls back to audio only, and video comes back when it recovers", async () => {
  const node = await startNode();
  try {
    const alice = await newPage(browser);
    // Alice's network, as her browser's statistics will tell it: bad while `__poorLink` is set.
    await alice.addInitScript(() => {
      const original = RTCPeerConnection.prototype.getStats;
      RTCPeerConnection.prototype.getStats = async function (...args) {
        const report = await original.apply(this, args);
        if (!window.__poorLink) return report;
        const worse = new Map();
        report.forEach((v, k) => worse.set(k, v));
        worse.set("poor", { id: "poor", type: "remote-inbound-rtp", fractionLost: 0.4, jitter: 0.15, roundTripTime: 1.2 });
        return worse;
      };
    });
    await alice.goto(`${node.url}/call?room=browser-fallback&name=Alice`);
    await until(alice, () => document.body.dataset.state === "joined");
    const bob = await newPage(browser);
    await bob.goto(`${node.url}/call?room=browser-fallback&name=Bob`);
    await until(bob, () => document.body.dataset.state === "joined");
    await remoteVideoFlows(bob);

    const sending = () =>
      alice.evaluate(() =>
        [...window.switchboardCall.links.values()].flatMap((l) =>
          l.pc
            .getSenders()
            .filter((s) => s.track?.kind === "video")
            .map((s) => s.getParameters().encodings.every((e) => e.active !== false)),
        ),
      );
    assert.deepEqual(await sending(), [true]);
    await alice.evaluate(() => {
      window.__poorLink = true;
    });
    // The node scores the samples poor, sends Alice `fallback` audio_only and Bob `video_paused`;
    // the SDK stops Alice's video encodings.
    await until(alice, () => document.querySelector("#quality").dataset.level === "poor");
    await until(bob, () => document.querySelector(".tile.remote")?.dataset.videoPaused === "true", undefined, 45_000);
    await until(alice, () => /video paused/.test(document.querySelector("#notice").textContent));
    assert.deepEqual(await sending(), [false]);
    // Good samples for long enough bring the video back.
    await alice.evaluate(() => {
      window.__poorLink = false;
    });
    await until(bob, () => document.querySelector(".tile.remote")?.dataset.videoPaused === "false", undefined, 45_000);
    await until(alice, () => window.switchboardCall.fallback === "normal");
    assert.deepEqual(await sending(), [true]);
  } finally {
    await node.stop();
  }
});
