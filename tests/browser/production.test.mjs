// Outside dev mode (a node with an API key): the call page takes its token from the URL
// fragment and says what it needs without one; the console asks for an admin token and refuses
// a person's; a participant who leaves is shown gone on the other side.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, newPage, startNode, until } from "./harness.mjs";

const API_KEY = "browser-production-api-key-0123456789";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

async function mint(node, body) {
  const res = await fetch(`${node.url}/auth/token`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200);
  return (await res.json()).token;
}

test("outside dev mode: tokens from the fragment, the console's admin token, a peer who leaves", async () => {
  const node = await startNode({ env: { SWITCHBOARD_API_KEY: API_KEY } });
  try {
    const info = await (await fetch(`${node.url}/api/node`)).json();
    assert.equal(info.devMode, false);
    // Without a token the page says what it needs, and does not mint one.
    const stranger = await newPage(browser);
    await stranger.goto(`${node.url}/call?room=prod-room&name=Eve`);
    await until(stranger, () => document.body.dataset.state === "failed");
    assert.match(await stranger.locator("#notice").textContent(), /needs a token/);

    const pages = [];
    for (const [user, name] of [["alice", "Alice"], ["bob", "Bob"]]) {
      const token = await mint(node, { userId: user, displayName: name, roomId: "prod-room" });
      const page = await newPage(browser);
      await page.goto(`${node.url}/call?room=prod-room#token=${token}`);
      await until(page, () => document.body.dataset.state === "joined");
      pages.push(page);
    }
    const [alice, bob] = pages;
    await until(alice, () => document.querySelector(".tile.remote .name")?.textContent === "Bob");

    // The console: the form asks for a token; a person's is refused, an admin's opens it.
    const operator = await newPage(browser);
    await operator.goto(`${node.url}/console`);
    await until(operator, () => !document.querySelector("#token-form").hidden);
    await operator.fill("#token-form input[name=token]", await mint(node, { userId: "carol" }));
    await operator.click("#token-form button");
    await until(operator, () => /refused: forbidden/.test(document.querySelector("#notice").textContent));
    await operator.fill("#token-form input[name=token]", await mint(node, { userId: "ops", grants: { admin: true } }));
    await operator.click("#token-form button");
    await until(operator, () => document.body.dataset.state === "live");
    await until(operator, () => document.querySelector('#rooms tr[data-room="prod-room"]') !== null);

    // Bob leaves: Alice's page shows him gone.
    await bob.click("#leave");
    await until(alice, () => document.querySelector(".tile.remote") === null);
    assert.match(await alice.locator("#notice").textContent(), /Bob left the call/);
  } finally {
    await node.stop();
  }
});
