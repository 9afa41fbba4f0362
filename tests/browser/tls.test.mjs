// The same call over HTTPS and WSS, with a certificate from `switchboard dev-cert`.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { BIN, launchBrowser, newPage, remoteVideoFlows, startNode, tempDir, until } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

test("two pages call over WSS with a dev certificate", async () => {
  const certs = tempDir("sb-certs-");
  execFileSync(BIN, ["dev-cert", "--out", certs]);
  const node = await startNode({
    args: ["--tls-cert", join(certs, "cert.pem"), "--tls-key", join(certs, "key.pem")],
  });
  try {
    assert.match(node.url, /^https:/);
    const sockets = [];
    const pages = [];
    for (const name of ["Alice", "Bob"]) {
      // A self-signed certificate: this browser profile is told to accept it.
      const page = await newPage(browser, { ignoreHTTPSErrors: true });
      page.on("websocket", (ws) => sockets.push(ws.url()));
      await page.goto(`${node.url}/call?room=over-wss&name=${name}`);
      await until(page, () => document.body.dataset.state === "joined");
      pages.push(page);
    }
    for (const page of pages) await remoteVideoFlows(page);
    assert.equal(sockets.length, 2);
    for (const url of sockets) assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+\/ws\/signal\?token=/);
  } finally {
    await node.stop();
  }
});
