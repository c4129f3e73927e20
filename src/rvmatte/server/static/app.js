// rvmatte web UI: plain JavaScript over the HTTP API (no build step).
//
// Jobs belong to this browser: a random owner key, kept in localStorage, goes with every API
// call (X-Rvmatte-Owner). Progress arrives as server-sent events from /api/events (read with
// fetch, which can send that header); job rows are built once and then updated in place.
"use strict";

const $ = (sel) => document.querySelector(sel);
const OWNER_STORAGE = "rvmatte-owner";
const state = {
  upload: null, bgUpload: null, plateUpload: null, previewSeq: 0, previewTimer: null,
  jobs: new Map(),      // id -> the job's latest JSON
  gone: new Set(),      // ids deleted here or by the server: a late event must not bring one back
  selected: null,       // the job shown in the "Your video" panel
  revealPlayer: false,  // scroll the player into view once it has loaded
  uploadSeq: 0,
  select: null,         // [x, y] in the video's pixels: the person to keep (null: everyone)
};

// -- the API -------------------------------------------------------------------------------
function ownerKey() {
  let key = null;
  try { key = localStorage.getItem(OWNER_STORAGE); } catch (e) { /* storage disabled */ }
  if (!key || !/^[A-Za-z0-9_-]{16,128}$/.test(key)) {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    key = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    try { localStorage.setItem(OWNER_STORAGE, key); } catch (e) { /* this page only */ }
  }
  return key;
}
const OWNER = ownerKey();

function apiFetch(url, init = {}) {
  const headers = new Headers(init.headers || {});
  headers.set("X-Rvmatte-Owner", OWNER);
  return fetch(url, { ...init, headers, credentials: "same-origin" });
}

async function errorOf(resp) {
  let msg = `${resp.status} ${resp.statusText}`;
  try { const j = await resp.json(); if (j.error) msg = j.error.message; } catch (e) { /* not JSON */ }
  return new Error(msg);
}

async function api(method, url, body) {
  const resp = await apiFetch(url, { method, body });
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

// -- small helpers -------------------------------------------------------------------------
function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function fmtBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} kB`;
}

function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
function setAttr(el, name, value) { if (el.getAttribute(name) !== value) el.setAttribute(name, value); }
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// -- options and the start button ------------------------------------------------------------
function backgroundValue() {
  const kind = $("#background").value;
  return kind === "colour" ? $("#colour").value : kind;
}

function options() {
  const outputs = [...document.querySelectorAll("input[name=outputs]:checked")].map((e) => e.value);
  const quality = [...document.querySelectorAll("input[name=quality]:checked")].map((e) => e.value);
  return { background: backgroundValue(), format: $("#format").value, ratio: $("#ratio").value,
           outputs: outputs.join(","), quality };
}

// -- who is matted: a click on the preview keeps that person -------------------------------
function setSelection(point) {
  state.select = point;
  $("#selection").hidden = !point;
  setText($("#selection-text"), point
    ? `Only the person at (${point[0]}, ${point[1]}) is matted; the others become background.`
    : "");
  schedulePreview(0);
}

function initSelection() {
  const img = $("#preview-composite");
  img.title = "Click a person to matte only them";
  img.addEventListener("click", (e) => {
    if (!state.upload || !img.clientWidth) return;
    const x = Math.floor((e.offsetX / img.clientWidth) * state.upload.width);
    const y = Math.floor((e.offsetY / img.clientHeight) * state.upload.height);
    setSelection([Math.min(Math.max(x, 0), state.upload.width - 1),
                  Math.min(Math.max(y, 0), state.upload.height - 1)]);
  });
  $("#select-everyone").addEventListener("click", () => setSelection(null));
}

function setMessage(text) { setText($("#message"), text || ""); }

function updateStart() {
  const o = options();
  let problem = "";
  if (!state.upload) problem = "Choose a video first.";
  else if (!o.outputs) problem = "Choose at least one output.";
  else if (o.background === "image" && !state.bgUpload) problem = "Choose a background image.";
  $("#start").disabled = Boolean(problem);
  $("#start").title = problem;
}

// -- choosing and uploading the video --------------------------------------------------------
function setUploadError(text) {
  setText($("#upload-error"), text || "");
  if (text) $("#drop").setAttribute("aria-invalid", "true");
  else $("#drop").removeAttribute("aria-invalid");
}

function clearPreview(status) {
  state.previewSeq++;  // a preview still on its way is stale now
  clearTimeout(state.previewTimer);
  for (const img of [$("#preview-composite"), $("#preview-alpha")]) {
    img.removeAttribute("src");
    img.alt = "";
  }
  $("#preview").hidden = true;
  setText($("#preview-status"), status);
}

async function uploadVideo(file) {
  const seq = ++state.uploadSeq;
  setMessage("");
  setUploadError("");
  state.upload = null;
  state.select = null;  // a point of another video
  $("#selection").hidden = true;
  updateStart();
  clearPreview("The preview appears once the video is uploaded.");
  setText($("#upload-info"), "");
  setText($("#drop-text"), `Uploading ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  form.append("kind", "video");
  try {
    const up = await api("POST", "/api/uploads", form);
    if (seq !== state.uploadSeq) return;
    state.upload = up;
    setText($("#drop-text"), `${up.filename} — choose another video to replace it`);
    const frames = up.frames ? `, ${up.frames} frames` : "";
    const fps = up.fps ? ` at ${up.fps.toFixed(2)} fps` : "";
    setText($("#upload-info"), `${up.width}×${up.height}${frames}${fps}, ${fmtBytes(up.size)}`);
    schedulePreview(0);
  } catch (e) {
    if (seq !== state.uploadSeq) return;
    setText($("#drop-text"), "Choose a video");
    clearPreview("Choose a video to see a preview.");
    setUploadError(`Upload failed: ${e.message}`);
  }
  updateStart();
}

function openPicker() { $("#file").click(); }

function initDropZone() {
  const drop = $("#drop");
  drop.addEventListener("click", openPicker);
  // as a native button: Enter opens on keydown, Space on keyup (browsers let a page open a
  // file picker from Space's keyup, not its keydown, which would also scroll the page)
  drop.addEventListener("keydown", (e) => {
    if (e.key === " ") e.preventDefault();
    if (e.key === "Enter" && !e.repeat) { e.preventDefault(); openPicker(); }
  });
  drop.addEventListener("keyup", (e) => {
    if (e.key === " ") { e.preventDefault(); openPicker(); }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) uploadVideo(e.dataTransfer.files[0]);
  });
  $("#file").addEventListener("change", (e) => {
    if (e.target.files.length) uploadVideo(e.target.files[0]);
    e.target.value = "";  // choosing the same file again is a change too
  });
}

// An image the job needs (the background image, the empty-scene photo): uploaded at once,
// kept in state[key] as its upload id.
async function uploadImage(file, key, label) {
  state[key] = null;
  updateStart();
  const form = new FormData();
  form.append("file", file);
  form.append("kind", "image");
  try {
    state[key] = (await api("POST", "/api/uploads", form)).id;
    setMessage("");
    schedulePreview(0);
  } catch (e) {
    setMessage(`${label}: ${e.message}`);
  }
  updateStart();
}

async function uploadPlate(file) {
  $("#plate-info").hidden = true;
  await uploadImage(file, "plateUpload", "Empty-scene photo");
  if (state.plateUpload) {
    setText($("#plate-text"), `Empty-scene photo: ${file.name}`);
    $("#plate-info").hidden = false;
  }
}

function clearPlate() {
  state.plateUpload = null;
  $("#plate").value = "";
  $("#plate-info").hidden = true;
  schedulePreview(0);
}

// -- the one-frame preview -------------------------------------------------------------------
function schedulePreview(delay = 300) {
  clearTimeout(state.previewTimer);
  state.previewTimer = setTimeout(loadPreview, delay);
}

async function fetchImage(url) {
  const resp = await apiFetch(url);
  if (!resp.ok) throw await errorOf(resp);
  return URL.createObjectURL(await resp.blob());
}

async function loadPreview() {
  if (!state.upload) return;
  const o = options();
  if (o.background === "image" && !state.bgUpload) {
    setText($("#preview-status"), "Choose a background image to preview it.");
    return;
  }
  const seq = ++state.previewSeq;
  const q = new URLSearchParams({ background: o.background, ratio: o.ratio });
  if (o.background === "image") q.set("background_upload", state.bgUpload);
  if (state.select) q.set("select", state.select.join(","));
  if (state.plateUpload) q.set("plate_upload", state.plateUpload);
  const base = `/api/uploads/${state.upload.id}/preview`;
  setText($("#preview-status"), "Computing the preview of the first frame…");
  try {
    const [comp, alpha] = await Promise.all([
      fetchImage(`${base}?${q}&view=composite`), fetchImage(`${base}?${q}&view=alpha`)]);
    if (seq !== state.previewSeq) return; // a newer preview is on its way
    $("#preview-composite").src = comp;
    $("#preview-composite").alt = "The first frame with the new background";
    $("#preview-alpha").src = alpha;
    $("#preview-alpha").alt = "The matte of the first frame";
    $("#preview").hidden = false;
    setText($("#preview-status"), state.select ? "Preview of the first frame."
      : "Preview of the first frame. Click a person in it to matte only them.");
  } catch (e) {
    if (seq === state.previewSeq) setText($("#preview-status"), `Preview failed: ${e.message}`);
  }
}

// -- starting a job --------------------------------------------------------------------------
async function startJob() {
  setMessage("");
  const o = options();
  const form = new FormData();
  form.append("upload_id", state.upload.id);
  for (const k of ["outputs", "background", "format", "ratio"]) form.append(k, o[k]);
  // stabilize: on when ticked; foreground_estimation: the server's default (on where it
  // runs on the CPU) when ticked, off when not
  if (o.quality.includes("stabilize")) form.append("stabilize", "true");
  if (!o.quality.includes("foreground_estimation")) form.append("foreground_estimation", "false");
  if (state.select) form.append("select", state.select.join(","));
  if (o.background === "image") form.append("background_upload", state.bgUpload);
  if (state.plateUpload) form.append("plate_upload", state.plateUpload);
  $("#start").disabled = true;
  try {
    const job = await api("POST", "/api/jobs", form);
    // The event stream may have brought this job already, further on (a quick job can be
    // done before this answer arrives): the answer is then older and must not replace it.
    if (!state.jobs.has(job.id)) applyJob(job);
    selectJob(job.id, { scroll: true });
  } catch (e) {
    setMessage(e.message);
  }
  updateStart();
}

// -- a job's view: built once, then updated in place ----------------------------------------
function progressText(job) {
  const p = job.progress;
  const parts = [];
  if (p.total) parts.push(`${p.done}/${p.total} frames`);
  else if (p.done) parts.push(`${p.done} frames`);
  if (job.state === "running" && job.fps) parts.push(`${job.fps.toFixed(1)} fps`);
  if (job.state === "running" && job.eta_seconds) parts.push(`${fmtSeconds(job.eta_seconds)} left`);
  if (job.state === "queued") parts.push("waiting for a free worker");
  if (job.error) parts.push(job.error);
  return parts.join(" · ");
}

function buildJobView(job, compact) {
  const view = el("div", { className: "job-view-inner" });
  const title = el("div", { className: "job-title" },
    el("span", { className: "name" }), " ",
    el("span", { className: "state" }));
  title.querySelector(".state").dataset.testid = "job-state";
  const bar = el("div", { className: "bar" }, el("div"));
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-label", `Progress of ${job.filename}`);
  view.append(title, el("div", { className: "small-text opts" }), bar,
              el("div", { className: "small-text info" }), el("div", { className: "links" }));
  if (compact) view.classList.add("compact");
  return view;
}

function updateJobView(view, job) {
  setText(view.querySelector(".name"), job.filename);
  const st = view.querySelector(".state");
  setText(st, job.state);
  st.className = `state state-${job.state}`;
  if (job.error) st.title = job.error; else st.removeAttribute("title");
  const o = job.options;
  const extras = [o.stabilize && "steady matte", o.foreground_estimation && "clean edges",
                  o.foreground_estimation === false && "network's edge colours",
                  o.plate_upload && "empty-scene photo", o.select && "selected people"];
  setText(view.querySelector(".opts"),
          [`${o.outputs.join(", ")}`, o.background, o.format, `ratio ${o.ratio}`,
           ...extras.filter(Boolean)].join(" · "));
  const pct = Math.round((job.progress.fraction || 0) * 100);
  const bar = view.querySelector(".bar");
  bar.firstChild.style.width = `${pct}%`;
  setAttr(bar, "aria-valuenow", String(pct));
  setText(view.querySelector(".info"), progressText(job));
  updateLinks(view.querySelector(".links"), job);
}

function updateLinks(box, job) {
  const kinds = Object.keys(job.results);
  if (box.dataset.kinds === kinds.join(",")) return;
  box.dataset.kinds = kinds.join(",");
  box.replaceChildren(...kinds.map((kind) => {
    const a = el("a", { href: job.results[kind], textContent: `Download ${kind}` });
    a.setAttribute("download", "");
    a.dataset.testid = `download-${kind}`;
    return a;
  }));
}

// -- the list of jobs ------------------------------------------------------------------------
function buildJobRow(job) {
  const li = el("li", { className: "job", id: `job-${job.id}` });
  li.dataset.jobId = job.id;
  const thumb = el("img", { className: "thumb", alt: "", loading: "lazy", width: 96, height: 54 });
  thumb.src = job.thumbnail;
  thumb.addEventListener("error", () => { thumb.style.visibility = "hidden"; });
  const play = el("button", { className: "small play", type: "button", textContent: "Play" });
  play.dataset.testid = "play";
  play.setAttribute("aria-label", `Play the result of ${job.filename}`);
  play.addEventListener("click", () => selectJob(job.id, { scroll: true, focus: true }));
  const del = el("button", { className: "small delete", type: "button" });
  del.dataset.testid = "delete";
  del.addEventListener("click", () => deleteJob(job.id, del));
  li.append(thumb, buildJobView(job, true), el("div", { className: "job-actions" }, play, del));
  return li;
}

function updateJobRow(li, job) {
  setAttr(li, "data-state", job.state);
  updateJobView(li.querySelector(".job-view-inner"), job);
  const active = job.state === "running" || job.state === "queued";
  const del = li.querySelector("button.delete");
  setText(del, active ? "Cancel" : "Delete");
  setAttr(del, "aria-label", `${active ? "Cancel" : "Delete"} ${job.filename}`);
  li.querySelector("button.play").hidden = job.state !== "done";
}

function placeRow(li, job) {
  // newest first, by creation time
  const list = $("#jobs");
  for (const other of list.children) {
    const o = state.jobs.get(other.dataset.jobId);
    if (other !== li && o && o.created_at < job.created_at) {
      list.insertBefore(li, other);
      return;
    }
  }
  list.append(li);
}

function applyJob(job) {
  if (state.gone.has(job.id)) return;  // an event written before the job was deleted
  state.jobs.set(job.id, job);
  let li = document.getElementById(`job-${job.id}`);
  if (!li) {
    li = buildJobRow(job);
    placeRow(li, job);
  }
  updateJobRow(li, job);
  $("#no-jobs").hidden = true;
  if (state.selected === job.id) updateCurrent(job);
}

function removeJob(id) {
  state.gone.add(id);
  state.jobs.delete(id);
  const li = document.getElementById(`job-${id}`);
  if (li) {
    const hadFocus = li.contains(document.activeElement);
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    if (hadFocus) (next ? next.querySelector("button.delete") : $("#jobs-title")).focus();
  }
  $("#no-jobs").hidden = state.jobs.size > 0;
  if (state.selected === id) {
    state.selected = null;
    closePlayer();
    $("#current").hidden = true;
  }
}

function applySnapshot(jobs) {
  const ids = new Set(jobs.map((j) => j.id));
  for (const id of [...state.jobs.keys()]) if (!ids.has(id)) removeJob(id);
  for (const job of [...jobs].reverse()) applyJob(job);
  $("#no-jobs").hidden = state.jobs.size > 0;
}

// -- deleting, with confirmation --------------------------------------------------------------
function confirmDialog(title, text, okLabel) {
  const dialog = $("#confirm");
  setText($("#confirm-title"), title);
  setText($("#confirm-text"), text);
  setText($("#confirm-ok"), okLabel);
  const opener = document.activeElement;
  if (dialog.open) return Promise.resolve(false);  // one question at a time
  return new Promise((resolve) => {
    // "close" is dispatched later, as a task: the close of an earlier opening can come
    // after this one has opened, and is not this one's answer
    const onClose = () => {
      if (dialog.open) return;
      dialog.removeEventListener("close", onClose);
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === "ok");
    };
    dialog.addEventListener("close", onClose);
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

async function deleteJob(id, button) {
  const job = state.jobs.get(id);
  if (!job) return;
  const active = job.state === "running" || job.state === "queued";
  const ok = await confirmDialog(
    active ? "Cancel this job?" : "Delete this job?",
    `${job.filename}: the job ${active ? "stops and " : ""}is deleted with its results.`,
    active ? "Cancel job" : "Delete");
  if (!ok) return;
  try {
    await api("DELETE", `/api/jobs/${id}`);
    removeJob(id);
  } catch (e) {
    setText($("#jobs-error"), e.message);
    if (button.isConnected) button.focus();
  }
}

// -- the selected job: progress where the user is looking, then the player --------------------
function selectJob(id, { scroll = false, focus = false } = {}) {
  const job = state.jobs.get(id);
  if (!job) return;
  const panel = $("#current");
  if (state.selected !== id) {
    state.selected = id;
    const view = $("#current-view");
    view.replaceChildren(buildJobView(job, false));
    closePlayer();
  }
  panel.hidden = false;
  updateCurrent(job);
  if (scroll) panel.scrollIntoView({ block: "nearest" });
  if (focus) $("#current-title").focus({ preventScroll: true });
}

function updateCurrent(job) {
  const view = $("#current-view .job-view-inner");
  const before = view.querySelector(".state").textContent;
  updateJobView(view, job);
  if (before !== job.state) {
    const words = { queued: "is queued", running: "is being converted", done: "is done",
                    failed: "failed", cancelled: "was cancelled" };
    setText($("#current-status"), `${job.filename} ${words[job.state] || job.state}.`);
    // the user watching the progress gets to see the result (once it has a size)
    if (job.state === "done" && before && inView($("#current-view"))) state.revealPlayer = true;
  }
  if (job.state === "done") openPlayer(job);
}

function inView(node) {
  const r = node.getBoundingClientRect();
  return r.bottom > 0 && r.top < window.innerHeight;
}

function revealPlayer() {
  if (!state.revealPlayer) return;
  state.revealPlayer = false;
  $("#player").scrollIntoView({ block: "nearest" });
}

// -- the result player: before/after -------------------------------------------------------
const PLAYABLE = { mp4: 'video/mp4; codecs="avc1.42E01E"', webm: 'video/webm; codecs="vp9"',
                   mov: "video/quicktime" };

function playerKinds(job) {
  return ["composite", "foreground", "alpha"].filter((k) => k in job.results);
}

function openPlayer(job) {
  const player = $("#player");
  if (player.dataset.jobId === job.id) return;
  player.dataset.jobId = job.id;
  const kinds = playerKinds(job);
  $("#player-kind").replaceChildren(...kinds.map((k) => el("option", { value: k, textContent: k })));
  $("#kind-field").hidden = kinds.length < 2;
  const probe = document.createElement("video");
  player.hidden = false;
  if (!probe.canPlayType(PLAYABLE[job.options.format] || "")) {
    $("#compare").hidden = true;
    player.querySelector(".player-controls").hidden = true;
    setText($("#player-note"), `${job.options.format.toUpperCase()} files do not play in ` +
            "browsers: download the result to watch it.");
    revealPlayer();
    return;
  }
  $("#compare").hidden = false;
  player.querySelector(".player-controls").hidden = false;
  setText($("#player-note"), job.options.background === "transparent"
    ? "The result is transparent: the checkerboard shows through. Drag the before/after "
      + "slider to compare."
    : "Drag the before/after slider to compare with the original.");
  $("#before").src = job.source;
  showKind(job, kinds[0]);
}

function showKind(job, kind) {
  const after = $("#after");
  after.src = job.results[kind];
  after.dataset.kind = kind;
  $("#player-kind").value = kind;
  setText($("#play"), "Play");
}

function closePlayer() {
  const player = $("#player");
  for (const v of [$("#before"), $("#after")]) { v.pause(); v.removeAttribute("src"); v.load(); }
  delete player.dataset.jobId;
  player.hidden = true;
}

function setSplit(value) {
  $("#compare").style.setProperty("--split", `${value}%`);
  $("#split").setAttribute("aria-valuetext", `${value}% before, ${100 - value}% after`);
}

function initPlayer() {
  const before = $("#before");
  const after = $("#after");
  const sync = () => { if (Math.abs(before.currentTime - after.currentTime) > 0.1) before.currentTime = after.currentTime; };
  after.addEventListener("play", () => { sync(); before.play().catch(() => {}); setText($("#play"), "Pause"); });
  after.addEventListener("pause", () => { before.pause(); setText($("#play"), "Play"); });
  after.addEventListener("seeked", sync);
  after.addEventListener("timeupdate", () => {
    sync();
    if (after.duration) $("#seek").value = String(Math.round(1000 * after.currentTime / after.duration));
  });
  $("#play").addEventListener("click", () => {
    if (after.paused) after.play().catch((e) => setText($("#player-note"), `Cannot play: ${e.message}`));
    else after.pause();
  });
  $("#seek").addEventListener("input", () => {
    if (after.duration) after.currentTime = after.duration * Number($("#seek").value) / 1000;
  });
  $("#split").addEventListener("input", () => setSplit(Number($("#split").value)));
  $("#player-kind").addEventListener("change", () => {
    const job = state.jobs.get($("#player").dataset.jobId);
    if (job) showKind(job, $("#player-kind").value);
  });
  after.addEventListener("loadeddata", revealPlayer);
  after.addEventListener("error", () => {
    if (after.getAttribute("src")) setText($("#player-note"), "The result could not be played here: download it.");
  });
}

// -- following progress: server-sent events over fetch ---------------------------------------
function parseEvents(buffer, onEvent) {
  let i;
  while ((i = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, i);
    buffer = buffer.slice(i + 2);
    let event = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (data) onEvent(event, JSON.parse(data));
  }
  return buffer;
}

function onJobEvent(event, data) {
  state.events = (state.events || 0) + 1;  // for diagnosis: events received in this page
  if (event === "snapshot") applySnapshot(data.jobs);
  else if (event === "job") applyJob(data);
  else if (event === "deleted") removeJob(data.id);
}

async function followJobs() {
  let delay = 1000;
  for (;;) {
    try {
      const resp = await apiFetch("/api/events");
      if (!resp.ok) throw await errorOf(resp);
      setText($("#jobs-error"), "");
      delay = 1000;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = parseEvents(buffer + value.replace(/\r\n/g, "\n"), onJobEvent);
      }
    } catch (e) {
      setText($("#jobs-error"), `Cannot follow the jobs (${e.message}); retrying…`);
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 15000);
  }
}

// -- start -----------------------------------------------------------------------------------
function initOptions() {
  $("#bg-image").addEventListener("change", (e) => {
    if (e.target.files.length) uploadImage(e.target.files[0], "bgUpload", "Background image");
  });
  $("#plate").addEventListener("change", (e) => {
    if (e.target.files.length) uploadPlate(e.target.files[0]);
  });
  $("#plate-clear").addEventListener("click", clearPlate);
  $("#background").addEventListener("change", () => {
    const kind = $("#background").value;
    $("#colour-field").hidden = kind !== "colour";
    $("#image-field").hidden = kind !== "image";
    // Transparency needs a format that keeps it.
    if (kind === "transparent" && $("#format").value === "mp4") $("#format").value = "webm";
    updateStart();
    schedulePreview();
  });
  $("#format").addEventListener("change", () => {
    if ($("#format").value === "mp4" && $("#background").value === "transparent") {
      setMessage("MP4 cannot keep transparency: choose WebM or MOV, or another background.");
    } else setMessage("");
  });
  for (const id of ["#colour", "#ratio"]) $(id).addEventListener("change", () => schedulePreview());
  for (const box of document.querySelectorAll("input[name=outputs]")) {
    box.addEventListener("change", updateStart);
  }
}

function init() {
  initDropZone();
  initOptions();
  initPlayer();
  initSelection();
  $("#start").addEventListener("click", startJob);
  followJobs();
}

document.addEventListener("DOMContentLoaded", init);
