// The console's only script: the live feed (server-sent events) and the map's refresh. Pages
// work without it (they are server-rendered); it only keeps them current.
"use strict";

const MAX_FEED_ROWS = 200;
const MAP_REFRESH_MS = 3000;

function startFeed(table) {
  const body = table.tBodies[0];
  const state = document.getElementById("feed-state");
  const pause = document.getElementById("feed-pause");
  const held = [];
  let paused = false;

  const show = (html) => {
    body.insertAdjacentHTML("afterbegin", html);
    body.rows[0].classList.add("fresh");
    while (body.rows.length > MAX_FEED_ROWS) body.deleteRow(-1);
    const empty = document.getElementById("feed-empty");
    if (empty) empty.remove();
  };
  const say = (text, cls) => { state.textContent = text; state.className = "feed-state " + cls; };

  const source = new EventSource(table.dataset.stream);
  source.onopen = () => say(paused ? "paused" : "live", paused ? "" : "live");
  source.onerror = () => say("reconnecting…", "down");
  source.addEventListener("entry", (event) => (paused ? held.push(event.data) : show(event.data)));
  source.addEventListener("unavailable", (event) => say("the gateway does not answer: " + event.data, "down"));
  source.addEventListener("available", () => say("live", "live"));
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) held.splice(0).forEach(show);
    say(paused ? "paused (new requests are held)" : "live", paused ? "" : "live");
  });
}

function startMap(list) {
  const updated = document.getElementById("map-updated");
  const refresh = async () => {
    try {
      const answer = await fetch(list.dataset.refresh, { headers: { Accept: "text/html" } });
      if (answer.ok) {
        list.innerHTML = await answer.text();
        updated.textContent = "checked at " + new Date().toLocaleTimeString();
      }
    } catch (error) {
      updated.textContent = "the console itself does not answer";
    }
  };
  setInterval(refresh, MAP_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const feed = document.querySelector("[data-feed]");
  if (feed) startFeed(feed);
  const map = document.querySelector("[data-refresh]");
  if (map) startMap(map);
});
