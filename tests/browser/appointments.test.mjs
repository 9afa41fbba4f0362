// The appointments page in a real Chromium: a host books a call with a guest, the guest is
// notified live and confirms, the host starts the call and the guest is notified in the page,
// both join (media flows both ways), the host ends it and the guest's call page shows it ended.

import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, newPage, remoteVideoFlows, startNode, until } from "./harness.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const row = (page) => page.locator("#appointments li").first();

test("an appointment: booked, confirmed, started, joined with media, ended by the host", async () => {
  const node = await startNode();
  try {
    const host = await newPage(browser);
    const guest = await newPage(browser);
    await host.goto(`${node.url}/appointments?user=dr-who`);
    await guest.goto(`${node.url}/appointments?user=pat`);
    for (const page of [host, guest]) await until(page, () => document.body.dataset.state === "ready");
    assert.equal(await guest.locator("#empty").isVisible(), true);

    // The host books; the guest's page is told at once and offers to confirm.
    await host.fill("#book-guests", "pat");
    await host.click("#book");
    await until(host, () => document.querySelector("#appointments li")?.dataset.status === "proposed");
    await until(guest, () => document.querySelector('#notifications li[data-kind="appointment.booked"]'));
    await until(guest, () => document.querySelector('#appointments li button[data-action="confirm"]'));
    assert.equal(await row(guest).getAttribute("data-role"), "guest");
    assert.equal(await guest.locator('#appointments li button[data-action="start"]').count(), 0, "only the host starts");

    await guest.click('#appointments li button[data-action="confirm"]');
    await until(host, () => document.querySelector('#notifications li[data-kind="appointment.confirmed"]'));
    await until(host, () => document.querySelector("#appointments li")?.dataset.status === "booked");

    // The host starts the call: the guest is notified in the page and may join.
    await host.click('#appointments li button[data-action="start"]');
    await until(guest, () => document.querySelector('#notifications li[data-kind="appointment.started"]'));
    await until(guest, () => document.querySelector("#unread").dataset.count === "2");
    await until(guest, () => document.querySelector('#appointments li button[data-action="join"]'));

    // Both join the appointment's room on the call page; media flows both ways.
    await host.click('#appointments li button[data-action="join"]');
    await guest.click('#appointments li button[data-action="join"]');
    for (const page of [host, guest]) await until(page, () => document.body.dataset.state === "joined");
    assert.match(await guest.evaluate(() => window.switchboardCall.room.roomId), /^appt-/);
    await until(guest, () => document.querySelector("#call-status").dataset.status === "active");
    await remoteVideoFlows(host);
    await remoteVideoFlows(guest);

    // The host ends it: the guest's page shows the call ended and why.
    await host.click("#end");
    await until(guest, () => document.querySelector("#call-status").dataset.status === "ended");
    await until(guest, () => /ended the call/.test(document.querySelector("#notice").textContent));

    // Back on the appointments page, the guest finds it fulfilled, with nothing left to do.
    await guest.goto(`${node.url}/appointments?user=pat`);
    await until(guest, () => document.querySelector("#appointments li")?.dataset.status === "fulfilled");
    assert.equal(await guest.locator("#appointments li button").count(), 0);
  } finally {
    await node.stop();
  }
});
