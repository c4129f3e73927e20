// rvmatte web UI: plain JavaScript over the HTTP API (no build step).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { upload: null, bgUpload: null, previewSeq: 0, previewTimer: null };

async function api(method, url, body) {
  const resp = await fetch(url, { method, body, credentials: "same-origin" });
  if (!resp.ok) {
    let msg = `${resp.status} ${resp.statusText}`;
    try { const j = await resp.json(); if (j.error) msg = j.error.message; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp.json();
}

function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  s = Math.round(s);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function fmtBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} kB`;
}

function backgroundValue() {
  const kind = $("#background").value;
  if (kind === "colour") return $("#colour").value;
  return kind;
}

function options() {
  const outputs = [...document.querySelectorAll("input[name=outputs]:checked")].map((e) => e.value);
  return { background: backgroundValue(), format: $("#format").value, ratio: $("#ratio").value,
           outputs: outputs.join(",") };
}

function setMessage(text) { $("#message").textContent = text || ""; }

function updateStart() {
  const o = options();
  let problem = "";
  if (!state.upload) problem = "Choose a video first.";
  else if (!o.outputs) problem = "Choose at least one output.";
  else if (o.background === "image" && !state.bgUpload) problem = "Choose a background image.";
  $("#start").disabled = Boolean(problem);
  $("#start").title = problem;
}

async function uploadVideo(file) {
  setMessage("");
  state.upload = null;
  updateStart();
  $("#drop-text").textContent = `Uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file);
  form.append("kind", "video");
  try {
    const up = await api("POST", "/api/uploads", form);
    state.upload = up;
    $("#drop-text").textContent = `${up.filename} — drop another video to replace it`;
    const frames = up.frames ? `, ${up.frames} frames` : "";
    const fps = up.fps ? ` at ${up.fps.toFixed(2)} fps` : "";
    $("#upload-info").textContent = `${up.width}×${up.height}${frames}${fps}, ${fmtBytes(up.size)}`;
    schedulePreview(0);
  } catch (e) {
    $("#drop-text").textContent = "Drop a video here, or click to choose one";
    setMessage(`Upload failed: ${e.message}`);
  }
  updateStart();
}

async function uploadBackgroundImage(file) {
  state.bgUpload = null;
  updateStart();
  const form = new FormData();
  form.append("file", file);
  form.append("kind", "image");
  try {
    state.bgUpload = (await api("POST", "/api/uploads", form)).id;
    setMessage("");
    schedulePreview(0);
  } catch (e) {
    setMessage(`Background image: ${e.message}`);
  }
  updateStart();
}

function schedulePreview(delay = 300) {
  clearTimeout(state.previewTimer);
  state.previewTimer = setTimeout(loadPreview, delay);
}

async function loadPreview() {
  if (!state.upload) return;
  const o = options();
  if (o.background === "image" && !state.bgUpload) {
    $("#preview-status").textContent = "Choose a background image to preview it.";
    return;
  }
  const seq = ++state.previewSeq;
  const q = new URLSearchParams({ background: o.background, ratio: o.ratio });
  if (o.background === "image") q.set("background_upload", state.bgUpload);
  const base = `/api/uploads/${state.upload.id}/preview`;
  $("#preview-status").textContent = "Computing the preview of the first frame…";
  try {
    const [comp, alpha] = await Promise.all([
      fetchImage(`${base}?${q}&view=composite`), fetchImage(`${base}?${q}&view=alpha`)]);
    if (seq !== state.previewSeq) return; // a newer preview is on its way
    $("#preview-composite").src = comp;
    $("#preview-alpha").src = alpha;
    $("#preview-status").textContent = "Preview of the first frame.";
  } catch (e) {
    if (seq === state.previewSeq) $("#preview-status").textContent = `Preview failed: ${e.message}`;
  }
}

async function fetchImage(url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  if (!resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return URL.createObjectURL(await resp.blob());
}

async function startJob() {
  setMessage("");
  const o = options();
  const form = new FormData();
  form.append("upload_id", state.upload.id);
  for (const k of ["outputs", "background", "format", "ratio"]) form.append(k, o[k]);
  if (o.background === "image") form.append("background_upload", state.bgUpload);
  $("#start").disabled = true;
  try {
    await api("POST", "/api/jobs", form);
    await refreshJobs();
  } catch (e) {
    setMessage(e.message);
  }
  updateStart();
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? "";
  row.appendChild(td);
  return td;
}

function renderJobs(jobs) {
  const tbody = $("#jobs tbody");
  tbody.replaceChildren();
  $("#no-jobs").hidden = jobs.length > 0;
  for (const job of jobs) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.id;
    tr.dataset.state = job.state;
    cell(tr, job.filename);
    const o = job.options;
    cell(tr, `${o.outputs.join(", ")} · ${o.background} · ${o.format} · ratio ${o.ratio}`)
      .className = "small-text";
    const st = cell(tr, job.state);
    st.className = `state-${job.state}`;
    st.dataset.testid = "job-state";
    if (job.error) st.title = job.error;
    const prog = document.createElement("div");
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = `${Math.round((job.progress.fraction || 0) * 100)}%`;
    bar.appendChild(fill);
    prog.appendChild(bar);
    const info = document.createElement("div");
    info.className = "small-text";
    const p = job.progress;
    const parts = [];
    if (p.total) parts.push(`${p.done}/${p.total} frames`);
    if (job.state === "running" && job.fps) parts.push(`${job.fps.toFixed(1)} fps`);
    if (job.state === "running" && job.eta_seconds) parts.push(`${fmtSeconds(job.eta_seconds)} left`);
    if (job.error) parts.push(job.error);
    info.textContent = parts.join(" · ");
    prog.appendChild(info);
    cell(tr, prog);
    const links = document.createElement("div");
    for (const [kind, url] of Object.entries(job.results)) {
      const a = document.createElement("a");
      a.href = url;
      a.textContent = kind;
      a.setAttribute("download", "");
      a.dataset.testid = `download-${kind}`;
      links.appendChild(a);
    }
    cell(tr, links);
    const del = document.createElement("button");
    del.className = "small";
    del.textContent = job.state === "running" || job.state === "queued" ? "Cancel" : "Delete";
    del.onclick = async () => {
      try { await api("DELETE", `/api/jobs/${job.id}`); } catch (e) { setMessage(e.message); }
      refreshJobs();
    };
    cell(tr, del);
    tbody.appendChild(tr);
  }
}

let refreshing = false;
async function refreshJobs() {
  if (refreshing) return;
  refreshing = true;
  try {
    renderJobs((await api("GET", "/api/jobs")).jobs);
  } catch (e) {
    setMessage(`Cannot list jobs: ${e.message}`);
  } finally {
    refreshing = false;
  }
}

function init() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) uploadVideo(e.dataTransfer.files[0]);
  });
  $("#file").addEventListener("change", (e) => {
    if (e.target.files.length) uploadVideo(e.target.files[0]);
  });
  $("#bg-image").addEventListener("change", (e) => {
    if (e.target.files.length) uploadBackgroundImage(e.target.files[0]);
  });
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
  $("#start").addEventListener("click", startJob);
  refreshJobs();
  setInterval(refreshJobs, 1000);
}

document.addEventListener("DOMContentLoaded", init);
