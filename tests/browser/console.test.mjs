// The operator console in Chromium: it shows this node as a member, the room a person is in
// and the node that room lives on, and stays live (a second overview arrives by itself).

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, newPage, startNode, until } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

test("the console shows the node, the room and its node, live", async () => {
  const node = await startNode();
  try {
    const alice = await newPage(browser);
    await alice.goto(`${node.url}/call?room=console-room&name=Alice`);
    await until(alice, () => document.body.dataset.state === "joined");
    const nodeId = await alice.evaluate(async () => (await (await fetch("/api/node")).json()).nodeId);

    const operator = await newPage(browser);
    await operator.goto(`${node.url}/console`);
    await until(operator, () => document.body.dataset.state === "live");
    await until(
      operator,
      (id) => document.querySelector(`#members tr[data-node="${id}"]`)?.dataset.health === "up",
      nodeId,
    );
    await until(
      operator,
      (id) => document.querySelector('#rooms tr[data-room="console-room"]')?.dataset.node === id,
      nodeId,
    );
    const first = await operator.locator("#updated").textContent();
    // Live: the page changes without a reload once the node has sent another overview.
    await until(
      operator,
      (before) => {
        const card = document.querySelector('.card[data-card="participants here"] .figure');
        return document.querySelector("#updated").textContent !== before && card?.textContent === "1";
      },
      first,
    );
    assert.equal(await operator.locator('#events tr[data-kind="participant.joined"]').count() >= 1, true);
  } finally {
    await node.stop();
  }
});
