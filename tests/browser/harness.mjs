// What the browser tests share: a Switchboard node started from the built binary (on a port
// of its own choosing, or a given one to come back on after a restart), Debian's Chromium
// with a fake camera and microphone, and bounded waits.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const BIN = process.env.SWITCHBOARD_BIN ?? "target/debug/switchboard";
export const CHROMIUM = process.env.SWITCHBOARD_CHROMIUM ?? "/usr/bin/chromium";
/** How long any one awaited browser event may take. */
export const WAIT_MS = 30_000;

export function tempDir(prefix = "sb-browser-") {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * Starts `switchboard serve`; resolves once it logs its address.
 * @param {{dataDir?: string, addr?: string, args?: string[], env?: object}} [o]
 */
export function startNode(o = {}) {
  const dataDir = o.dataDir ?? tempDir();
  // The embedded TURN server on a free port, not 3478 (another TURN server may hold it).
  const args = ["serve", "--http-addr", o.addr ?? "127.0.0.1:0", "--data-dir", dataDir, "--turn-listen", "127.0.0.1:0", ...(o.args ?? [])];
  const child = spawn(BIN, args, {
    env: { ...process.env, RUST_LOG: "info", ...(o.env ?? {}) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the node did not start:\n${log}`)), WAIT_MS);
    const onData = (chunk) => {
      log += chunk;
      const m = /(wss?):\/\/([0-9.:\[\]a-z]+)\/ws\/signal/.exec(log);
      if (m && !node.url) {
        clearTimeout(timer);
        node.addr = m[2];
        node.url = `${m[1] === "wss" ? "https" : "http"}://${m[2]}`;
        resolve(node);
      }
    };
    const node = {
      child,
      dataDir,
      url: null,
      addr: null,
      log: () => log,
      /** kill -9: the node dies without a word to anyone. */
      kill() {
        return new Promise((r) => {
          if (child.exitCode !== null || child.signalCode !== null) return r();
          child.once("exit", () => r());
          child.kill("SIGKILL");
        });
      },
      async stop() {
        await node.kill();
        if (!o.dataDir) rmSync(dataDir, { recursive: true, force: true });
      },
    };
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`could not start ${BIN} (set SWITCHBOARD_BIN): ${e.message}`));
    });
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code, signal) => {
      if (!node.url) {
        clearTimeout(timer);
        reject(new Error(`the node exited (${code ?? signal}):\n${log}`));
      }
    });
  });
}

/** Headless Chromium with a fake camera and microphone that need no permission prompt. */
export function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      // The tests run where only loopback exists: let WebRTC use it, with plain addresses.
      "--allow-loopback-in-peer-connection",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      "--autoplay-policy=no-user-gesture-required",
      ...extraArgs,
    ],
  });
}

/** A page of its own browser context (its own storage, like another person's browser). */
export async function newPage(browser, options = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: options.ignoreHTTPSErrors ?? false });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  if (process.env.SWITCHBOARD_BROWSER_CONSOLE) {
    page.on("console", (m) => console.error(`[console] ${m.text()}`));
  }
  return page;
}

/** Waits until `fn(arg)` is truthy in the page; on a timeout, says what the page looked like. */
export async function until(page, fn, arg, timeout = WAIT_MS) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const state = await describe(page).catch((d) => `(no description: ${d.message})`);
    e.message += `\nwaiting for: ${fn.toString().slice(0, 300)}\npage ${page.url()}:\n${state}`;
    throw e;
  }
}

/** The call page's state, for a failure message. */
export function describe(page) {
  return page.evaluate(async () => {
    const c = window.switchboardCall;
    const links = [];
    for (const l of c?.links.values() ?? []) {
      links.push({
        peer: l.peerId,
        polite: l.polite,
        signaling: l.pc.signalingState,
        ice: l.pc.iceConnectionState,
        connection: l.pc.connectionState,
        offers: l.offersSent,
      });
    }
    const tiles = [...document.querySelectorAll(".tile")].map((t) => {
      const v = t.querySelector("video");
      return { ...t.dataset, width: v.videoWidth, frames: v.getVideoPlaybackQuality().totalVideoFrames };
    });
    return JSON.stringify({
      state: document.body.dataset.state,
      peerId: c?.peerId,
      callState: c?.state,
      links,
      tiles,
      notice: document.querySelector("#notice")?.textContent,
    });
  });
}

/** Frames decoded so far by each remote video of the page, by peer id. */
export function remoteFrames(page) {
  return page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll(".tile.remote")].map((t) => [
        t.dataset.peer,
        t.querySelector("video").getVideoPlaybackQuality().totalVideoFrames,
      ]),
    ),
  );
}

/**
 * Waits until a remote video of the page (of a peer that is not away) has decoded `more`
 * frames beyond what `baseline` (from `remoteFrames`) says it had.
 */
export function remoteVideoFlows(page, baseline = {}, more = 10) {
  return until(
    page,
    ({ baseline, more }) =>
      [...document.querySelectorAll(".tile.remote:not([data-away='true'])")].some((t) => {
        const v = t.querySelector("video");
        return v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames >= (baseline[t.dataset.peer] ?? 0) + more;
      }),
    { baseline, more },
  );
}

/** Audio packets received over every link of the page's call. */
export function audioPacketsReceived(page) {
  return page.evaluate(async () => {
    let packets = 0;
    for (const link of window.switchboardCall?.links.values() ?? []) {
      const report = await link.pc.getStats();
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") packets += s.packetsReceived ?? 0;
      });
    }
    return packets;
  });
}
