// The real-player page's recorder. Invariants: window.ocalab.done becomes true exactly once,
// when the video ends or dash.js reports a fatal error (then window.ocalab.error says which; a
// segment download failing is not fatal: download_errors);
// segments[] has one entry per completed media-segment request, in completion order, with the
// cumulative stall seconds at that moment (stall_total_s); stalls count only after the first
// 'playing' event (the wait before it is startup_s), from the element's 'waiting' or dash.js's
// video bufferStalled to 'playing' or bufferLoaded; an empty buffer at the end is no stall.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const mpd = params.get("mpd");
  const video = document.getElementById("video");
  const status = document.getElementById("status");
  const t0 = performance.now();
  const rec = window.ocalab = {
    mpd: mpd, done: false, error: "", started_unix: Date.now() / 1000, startup_s: null,
    segments: [], stalls: [], stall_total_s: 0, steering_requests: 0, steering: [],
    dashjs_version: "", download_errors: [],
  };
  const DOWNLOAD_ERRORS = [27, 28];  // dash.js DOWNLOAD_ERROR_ID_CONTENT / _INITIALIZATION
  let stallStart = null;
  const now_s = () => (performance.now() - t0) / 1000;
  const finish = (err) => {
    if (rec.done) return;
    if (stallStart !== null) endStall();
    rec.error = err || "";
    // Chromium's decoder counters: audio really played, not only fetched
    rec.video_decoded_bytes = video.webkitVideoDecodedByteCount || 0;
    rec.audio_decoded_bytes = video.webkitAudioDecodedByteCount || 0;
    rec.ended_unix = Date.now() / 1000;
    rec.done = true;
    draw();
  };
  const endStall = () => {
    const d = now_s() - stallStart;
    rec.stalls.push({start_s: stallStart, duration_s: d});
    rec.stall_total_s += d;
    stallStart = null;
  };
  const draw = () => {
    const last = rec.segments[rec.segments.length - 1];
    status.textContent = `dash.js ${rec.dashjs_version}  segments ${rec.segments.length}` +
      (last ? `  last ${last.representation} from ${last.service_location}` : "") +
      `  startup ${rec.startup_s === null ? "-" : rec.startup_s.toFixed(3) + " s"}` +
      `  stalls ${rec.stalls.length}` + (rec.done ? (rec.error ? `  ERROR ${rec.error}` : "  ended") : "");
  };
  if (!mpd) { finish("no ?mpd= in the page URL"); return; }
  if (typeof dashjs === "undefined") { finish("dash.js is not vendored (make web-assets)"); return; }
  const player = dashjs.MediaPlayer().create();
  rec.dashjs_version = player.getVersion();
  // ?abr=abrBola|abrThroughput|abrDynamic, ?buffer_s=S (the buffer target), ?initial_kbps=K
  // (the first rung: the highest at most K) and ?count_latency=1 align dash.js with the Python
  // player it is compared with
  const buffer = {fastSwitchEnabled: false};
  const bufferS = Number(params.get("buffer_s"));
  if (bufferS > 0) Object.assign(buffer, {stableBufferTime: bufferS, bufferTimeAtTopQuality: bufferS,
                                          bufferTimeAtTopQualityLongForm: bufferS});
  player.updateSettings({
    debug: {logLevel: dashjs.Debug.LOG_LEVEL_WARNING},
    streaming: {applyContentSteering: true, buffer: buffer,
                abr: {ABRStrategy: params.get("abr") || "abrDynamic",
                      // ?count_latency=1: a throughput sample is bytes over the whole request
                      // (first byte's wait included), as the Python player measures it
                      useDeadTimeLatency: params.get("count_latency") !== "1",
                      initialBitrate: {video: Number(params.get("initial_kbps")) || -1}}},
  });
  rec.abr_strategy = player.getSettings().streaming.abr.ABRStrategy;
  const E = dashjs.MediaPlayer.events;
  player.on(E.FRAGMENT_LOADING_COMPLETED, (e) => {
    const r = e.request;
    if (!r || r.type !== "MediaSegment" || !e.response) return;
    const ms = (d) => (d instanceof Date ? d.getTime() : Number(d));
    rec.segments.push({
      url: r.url, media_type: r.mediaType, index: r.index, representation: String(r.representationId), bytes: e.response.byteLength,
      request_unix: ms(r.requestStartDate) / 1000,
      ttfb_ms: ms(r.firstByteDate) - ms(r.requestStartDate),
      download_ms: ms(r.requestEndDate) - ms(r.requestStartDate),
      service_location: r.serviceLocation || "", buffer_s: player.getBufferLength("video") || 0,
      stall_total_s: rec.stall_total_s, time_unix: Date.now() / 1000,
    });
    draw();
  });
  player.on(E.CONTENT_STEERING_REQUEST_COMPLETED, (e) => {
    rec.steering_requests += 1;
    rec.steering.push(e.currentSteeringResponseData || null);
  });
  player.on(E.ERROR, (e) => {
    const err = e.error || {};
    const msg = `dash.js error ${err.code}: ${err.message || JSON.stringify(e).slice(0, 300)}`;
    // a segment's download failing (after dash.js's retries) is not the end: dash.js puts its
    // serviceLocation on the blacklist and asks the next location (Content Steering)
    if (DOWNLOAD_ERRORS.includes(err.code)) { rec.download_errors.push(msg); draw(); return; }
    finish(msg);
  });
  video.addEventListener("playing", () => {
    if (rec.startup_s === null) rec.startup_s = now_s();
    else if (stallStart !== null) endStall();
    draw();
  });
  const startStall = () => {
    if (rec.startup_s !== null && stallStart === null && !video.ended) stallStart = now_s();
  };
  video.addEventListener("waiting", startStall);
  // headless Chromium does not always fire 'waiting' when the MSE buffer runs dry: dash.js's own
  // video buffer events (buffer below its stall threshold, and filled again) mark stalls too
  player.on(E.BUFFER_EMPTY, (e) => { if (e.mediaType === "video") startStall(); });
  player.on(E.BUFFER_LOADED, (e) => {
    if (e.mediaType === "video" && stallStart !== null) { endStall(); draw(); }
  });
  video.addEventListener("ended", () => { stallStart = null; finish(""); });  // the end is no stall
  // dash.js's own end of the stream ends the session too, whichever comes first (the element's
  // 'ended' can lag or miss when the last video and audio segments end a frame apart)
  player.on(E.PLAYBACK_ENDED, () => { stallStart = null; finish(""); });
  player.initialize(video, mpd, true);
  draw();
})();
