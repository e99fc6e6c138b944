// The review page: one region at a time, keyboard first. Enter saves the input as the region's
// verified text and moves on, Esc skips, ArrowUp goes back. Talks to /v1/review and
// /v1/regions/{id}/verify with the session cookie; every POST carries the CSRF token.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const filters = new URLSearchParams(location.search);
  const el = (id) => document.getElementById(id);
  let items = [], index = 0, total = 0, saving = false;

  async function api(path, options) {
    const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
    if (response.status === 401) { location.reload(); throw new Error("logged out"); }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = body.detail || {};
      const message = typeof detail === "string" ? detail : (detail.message || JSON.stringify(detail));
      throw new Error(`${response.status} ${detail.error || ""}: ${message}`);
    }
    return body;
  }

  async function loadMore() {
    // Verified regions leave the queue: the unverified ones loaded so far are still at its head.
    const pending = items.filter((item) => item.verified_text === null).length;
    const query = new URLSearchParams(filters);
    query.set("limit", "100");
    query.set("offset", String(pending));
    const page = await api("/v1/review?" + query.toString());
    const known = new Set(items.map((item) => item.id));
    items = items.concat(page.items.filter((item) => !known.has(item.id)));
    if (!total) total = page.total;
    return page.items.length > 0;
  }

  function renderReading(runs) {
    const reading = el("reading");
    reading.replaceChildren();
    for (const run of runs) {
      const node = run.low ? document.createElement("mark") : document.createTextNode(run.text);
      if (run.low) node.textContent = run.text;
      reading.appendChild(node);
    }
  }

  async function show() {
    if (index >= items.length && !(await loadMore())) {
      el("review").hidden = true;
      el("empty").hidden = false;
      el("progress").textContent = `${Math.min(index, total)} of ${total} done`;
      return;
    }
    const item = items[index];
    el("progress").textContent = `${index + 1} of ${Math.max(total, items.length)}`;
    el("meta").textContent = `${item.filename || item.document_id} · page ${item.page_index + 1}` +
      ` · confidence ${item.confidence.toFixed(3)}` + (item.field ? ` · field ${item.field}` : "") +
      (item.verified_text !== null ? " · verified" : "");
    el("crop").src = `/v1/regions/${item.id}/crop`;
    renderReading(item.reading);
    const input = el("text");
    input.value = item.verified_text !== null ? item.verified_text : item.text;
    input.dataset.region = String(item.id);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
    if (items[index + 1]) new Image().src = `/v1/regions/${items[index + 1].id}/crop`;  // prefetch
  }

  function status(message, isError) {
    el("status").textContent = message;
    el("status").className = isError ? "error" : "";
  }

  async function save() {
    if (saving || index >= items.length) return;
    const item = items[index], text = el("text").value;
    saving = true;
    try {
      const saved = await api(`/v1/regions/${item.id}/verify`, {
        method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
        body: JSON.stringify({text: text}),
      });
      item.verified_text = saved.verified_text;
      status(`saved region ${item.id}`, false);
      index += 1;
      await show();
    } catch (error) {
      status(error.message, true);
    } finally {
      saving = false;
    }
  }

  el("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); save(); }
    else if (event.key === "Escape") { event.preventDefault(); status("skipped", false); index += 1; show(); }
    else if (event.key === "ArrowUp") { event.preventDefault(); if (index > 0) { index -= 1; status("", false); show(); } }
  });
  el("logout").addEventListener("click", async () => {
    await api("/review/logout", {method: "POST", headers: {"X-CSRF-Token": csrf}}).catch(() => null);
    location.reload();
  });
  show().catch((error) => status(error.message, true));
})();
