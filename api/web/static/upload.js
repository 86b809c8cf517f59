// The dataset page's uploader: sends the chosen files through the server's tus endpoint with
// tus-js-client, one after the other, each 32 MB request carrying its sha256 (the tus checksum
// extension: the server keeps a request's bytes only when they match). Files of one acquisition
// chosen together (by the vendors' naming rules the page is given, from ingest/grouping.py, or
// by "These files belong together") share a group key and become one image. Progress per file
// and in total, pause and resume, retries after a cut connection, and resumption after a page
// reload when the same files are chosen again (tus-js-client keeps each upload's URL in
// localStorage). Without JavaScript, or in a browser tus-js-client does not support, the form
// sends the files in one request as before.
(function () {
  "use strict";

  const configNode = document.getElementById("uploader-config");
  const form = document.getElementById("upload-form");
  if (!configNode || !form || !window.tus || !window.tus.isSupported) return;
  if (!window.crypto || !window.crypto.subtle) return; // sha256 needs a secure context
  const config = JSON.parse(configNode.textContent);
  if (!config) return;
  const text = config.strings;

  const input = document.getElementById("upload-files");
  const startButton = document.getElementById("upload-start");
  const queueBox = document.getElementById("upload-queue");
  const list = document.getElementById("upload-items");
  const togetherButton = document.getElementById("upload-together");
  const pauseButton = document.getElementById("upload-pause");
  const totalBar = document.getElementById("upload-total-bar");
  const totalText = document.getElementById("upload-total-text");
  const unfinished = document.getElementById("upload-unfinished");
  const endpoint = new URL(config.endpoint, window.location.href).href;
  const numberFormat = new Intl.NumberFormat(config.language, { maximumFractionDigits: 1 });
  // Waits between tries after a cut connection or a server that is restarting (about 2 min).
  const RETRY_DELAYS = [0, 1000, 2000, 4000, 8000, 15000, 30000, 30000, 30000];

  document.querySelectorAll("#upload .uploader-only").forEach(function (node) {
    node.hidden = false;
  });

  // ------------------------------------------------------------ the vendors' naming rules

  const rules = config.rules.map(function (rule) {
    return {
      vendor: rule.vendor,
      byNameAlone: rule.byNameAlone,
      kinds: rule.kinds.map(function (kind) {
        return { name: kind.name, rank: kind.rank, pattern: new RegExp(kind.pattern, "i") };
      }),
    };
  });

  function baseName(name) {
    const parts = name.replace(/\\/g, "/").split("/");
    return parts[parts.length - 1];
  }

  // What grouping.member() says of a name: its rule, its kind and its acquisition key.
  function memberOf(name) {
    const base = baseName(name);
    for (const rule of rules) {
      for (const kind of rule.kinds) {
        const match = kind.pattern.exec(base);
        if (match) {
          const key = rule.vendor + ":" + match.groups.stem.toLowerCase();
          return { rule: rule, kind: kind, key: key.slice(0, 300) };
        }
      }
    }
    return null;
  }

  // Files chosen together, as items: the members of one acquisition form one item with the
  // acquisition's key as their group. Names distinctive enough (TIA, DE-Server, SerialEM, Merlin)
  // always join; the common ones (X.tif with X.txt) only as one image with its sidecars.
  function itemsOf(files) {
    const order = [];
    const byKey = new Map();
    for (const file of files) {
      const found = memberOf(file.name);
      if (!found) {
        order.push({ files: [file], group: null });
        continue;
      }
      if (!byKey.has(found.key)) {
        byKey.set(found.key, []);
        order.push({ key: found.key });
      }
      byKey.get(found.key).push({ file: file, found: found });
    }
    const items = [];
    for (const entry of order) {
      if (!entry.key) {
        items.push(entry);
        continue;
      }
      const members = byKey.get(entry.key);
      const openable = members.filter(function (m) { return m.found.kind.rank !== null; });
      const sidecars = members.length - openable.length;
      const rule = members[0].found.rule;
      const joins = members.length > 1 && openable.length > 0 &&
        (rule.byNameAlone || (openable.length === 1 && sidecars > 0));
      if (!joins) {
        members.forEach(function (m) { items.push({ files: [m.file], group: null }); });
        continue;
      }
      members.sort(function (a, b) {
        const ra = a.found.kind.rank === null ? 99 : a.found.kind.rank;
        const rb = b.found.kind.rank === null ? 99 : b.found.kind.rank;
        return ra - rb;
      });
      items.push({ files: members.map(function (m) { return m.file; }), group: entry.key });
    }
    return items;
  }

  // For the tests: the group each name would get if these names were chosen together.
  window.AllMicroUploader = {
    groups: function (names) {
      return itemsOf(names.map(function (name) { return { name: name }; })).map(function (item) {
        return { names: item.files.map(function (f) { return f.name; }), group: item.group };
      });
    },
  };

  // ------------------------------------------------------------ the queue and its display

  let items = [];
  let sending = false;
  let current = null; // the entry whose upload runs (or is paused)
  let counter = 0;

  function bytes(size) {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let value = size;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return numberFormat.format(value) + " " + units[unit];
  }

  function element(tag, attributes, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function newItem(files, group) {
    counter += 1;
    return {
      id: "upload-item-" + counter,
      group: group,
      entries: files.map(function (file) {
        return { file: file, sent: 0, state: "ready", upload: null, checksums: new Map() };
      }),
    };
  }

  function choose(files) {
    items = itemsOf(Array.from(files)).map(function (item) { return newItem(item.files, item.group); });
    render();
  }

  function render() {
    list.replaceChildren();
    for (const item of items) {
      const box = element("input", { type: "checkbox", id: item.id, className: "upload-pick" });
      box.checked = false;
      box.disabled = sending;
      box.hidden = items.length < 2;
      const rows = item.entries.map(function (entry) {
        entry.bar = element("progress", { max: "100", value: "0", "aria-label": entry.file.name });
        entry.status = element("span", { className: "upload-status" });
        const name = item.entries.length > 1
          ? element("span", { className: "upload-name", text: entry.file.name })
          : element("label", { className: "upload-name", for: item.id, text: entry.file.name });
        const row = element("li", { className: "upload-file" }, [
          item.entries.length > 1 ? null : box,
          name,
          element("span", { className: "upload-size", text: bytes(entry.file.size) }),
          entry.bar,
          entry.status,
        ]);
        entry.row = row;
        show(entry);
        return row;
      });
      let head = null;
      if (item.entries.length > 1) {
        const split = element("button", { type: "button", className: "link upload-split", text: text.separate });
        split.disabled = sending;
        split.addEventListener("click", function () { separate(item); });
        head = element("div", { className: "upload-group" }, [
          box,
          element("label", { for: item.id, text: text.acquisition + ": " + baseName(item.entries[0].file.name) }),
          split,
        ]);
      }
      const node = element("li", { className: "upload-item", "data-group": item.group || "" }, [
        head,
        element("ul", { className: "upload-files" }, rows),
      ]);
      item.node = node;
      list.appendChild(node);
    }
    queueBox.hidden = items.length === 0;
    togetherButton.hidden = items.length < 2;
    togetherButton.disabled = sending;
    updateTotal();
  }

  function show(entry) {
    entry.row.dataset.state = entry.state;
    entry.bar.value = entry.file.size ? (100 * entry.sent) / entry.file.size : (entry.state === "ready" ? 0 : 100);
    const messages = {
      ready: text.ready,
      sending: text.sending,
      resuming: text.starting,
      paused: text.paused,
      waiting: text.waiting,
      offline: text.offline,
      done: text.received,
      present: text.present,
    };
    let message = messages[entry.state] || "";
    if (entry.state === "refused") message = text.refused + ": " + entry.reason;
    if (entry.state === "failed") message = text.failed + (entry.reason ? ": " + entry.reason : "");
    entry.status.textContent = message;
    entry.status.classList.toggle("error-text", entry.state === "refused" || entry.state === "failed");
  }

  function allEntries() {
    return items.flatMap(function (item) { return item.entries; });
  }

  function updateTotal() {
    // A refused file is not part of what there is to send.
    const entries = allEntries().filter(function (e) { return e.state !== "refused"; });
    const total = entries.reduce(function (sum, e) { return sum + e.file.size; }, 0);
    const sent = entries.reduce(function (sum, e) { return sum + e.sent; }, 0);
    totalBar.value = total ? (100 * sent) / total : 0;
    totalText.textContent = bytes(sent) + " / " + bytes(total);
  }

  // "These files belong together": the ticked items (or all) become one acquisition.
  togetherButton.addEventListener("click", function () {
    const ticked = items.filter(function (item) {
      const box = document.getElementById(item.id);
      return box && box.checked;
    });
    const chosen = ticked.length >= 2 ? ticked : items;
    if (chosen.length < 2) return;
    const files = chosen.flatMap(function (item) { return item.entries.map(function (e) { return e.file; }); });
    const key = "manual:" + (window.crypto.randomUUID ? window.crypto.randomUUID() : String(Date.now()) + Math.random());
    const merged = newItem(files, key);
    const at = items.indexOf(chosen[0]);
    items = items.filter(function (item) { return chosen.indexOf(item) < 0; });
    items.splice(Math.min(at, items.length), 0, merged);
    render();
  });

  function separate(item) {
    const at = items.indexOf(item);
    const singles = item.entries.map(function (e) { return newItem([e.file], null); });
    items.splice(at, 1, ...singles);
    render();
  }

  // ------------------------------------------------------------ sending

  function base64(buffer) {
    let binary = "";
    const view = new Uint8Array(buffer);
    for (let i = 0; i < view.length; i += 1) binary += String.fromCharCode(view[i]);
    return window.btoa(binary);
  }

  // tus-js-client's file source, with each chunk's sha256 noted (by its offset) as it is read.
  function checkedReader(entry) {
    return {
      openFile: function (file) {
        return Promise.resolve({
          size: file.size,
          slice: async function (start, end) {
            const value = file.slice(start, end);
            const digest = await window.crypto.subtle.digest("SHA-256", await value.arrayBuffer());
            // Kept by offset, not cleared: an upload Pause replaced may still hash its last chunk.
            entry.checksums.set(start, base64(digest));
            return { value: value, done: end >= file.size };
          },
          close: function () {},
        });
      },
    };
  }

  function problemDetail(response) {
    if (!response) return "";
    try {
      const body = JSON.parse(response.getBody() || "{}");
      return body.detail || body.title || "";
    } catch (error) {
      return "";
    }
  }

  function statusOf(error) {
    return error && error.originalResponse ? error.originalResponse.getStatus() : 0;
  }

  function retryable(status) {
    // No answer (cut, server restarting), a server error, or a state the next try clears:
    // another request still writing (423), an offset to look up again (409), a chunk
    // damaged on the way (460). No room (507: a quota, a full disk) and too many uploads
    // unfinished (429) are said at once, with the server's reason: the person choosing files
    // decides what to do, where the unattended agent would wait.
    if (status === 507) return false;
    return status === 0 || status >= 500 || [409, 423, 460].indexOf(status) >= 0;
  }

  function fingerprint(entry, group) {
    const file = entry.file;
    return ["allmicro", config.datasetId, group || "", file.name, file.size, file.lastModified].join("|");
  }

  function send(item, entry) {
    return new Promise(function (resolve) {
      entry.finish = resolve;
      begin(item, entry);
    });
  }

  // A new tus upload for the entry, going on from what the server already has. Resume makes a
  // new one too: a paused upload started again would also finish the request Pause caught
  // while its chunk was being read and hashed (tus-js-client forgets it was aborted), sent with
  // half its headers, and refused with 412 while the other went on. Events of an upload that
  // is no longer the entry's are ignored.
  function begin(item, entry) {
    const metadata = { filename: entry.file.name, dataset_id: config.datasetId };
    if (item.group) metadata.group = item.group;
    if (entry.file.webkitRelativePath) metadata.relative_path = entry.file.webkitRelativePath;
    entry.item = item;
    const upload = new window.tus.Upload(entry.file, {
      endpoint: endpoint,
      chunkSize: config.chunkBytes,
      retryDelays: RETRY_DELAYS,
      metadata: metadata,
      headers: { "X-CSRF-Token": config.csrf || "" },
      fingerprint: function () { return Promise.resolve(fingerprint(entry, item.group)); },
      removeFingerprintOnSuccess: true,
      fileReader: checkedReader(entry),
      onBeforeRequest: function (request) {
        if (entry.upload !== upload || request.getMethod() !== "PATCH") return;
        const sum = entry.checksums.get(Number(request.getHeader("Upload-Offset")));
        if (sum) request.setHeader("Upload-Checksum", "sha256 " + sum);
      },
      onProgress: function (sent) {
        if (entry.upload !== upload) return;
        entry.sent = sent;
        // A progress event of the request Pause aborted may still arrive: the upload stays
        // paused (taken for "sending", the next click on Resume would pause it again).
        if (entry.state !== "sending" && entry.state !== "paused") {
          entry.state = "sending";
        }
        show(entry);
        updateTotal();
      },
      onShouldRetry: function (error) {
        if (entry.upload !== upload) return false;
        const status = statusOf(error);
        if (!retryable(status)) return false;
        if (navigator.onLine === false) return false;
        entry.state = "waiting";
        show(entry);
        return true;
      },
      onError: function (error) {
        if (entry.upload !== upload) return;
        const status = statusOf(error);
        if (retryable(status)) {
          // Out of tries, or offline: the entry waits for the network or for Resume.
          entry.state = navigator.onLine === false ? "offline" : "failed";
          entry.reason = "";
          show(entry);
          pauseButton.textContent = text.resume;
          pauseButton.hidden = false;
          return;
        }
        entry.state = "refused";
        entry.reason = problemDetail(error.originalResponse) || String(status);
        show(entry);
        updateTotal();
        entry.finish();
      },
      onSuccess: function (payload) {
        if (entry.upload !== upload) return;
        const response = payload && payload.lastResponse;
        const present = response && response.getHeader("X-Allmicro-Already-Present") === "true";
        entry.sent = entry.file.size;
        entry.state = present ? "present" : "done";
        show(entry);
        updateTotal();
        entry.finish();
      },
    });
    entry.upload = upload;
    entry.state = "resuming";
    show(entry);
    current = entry;
    upload.findPreviousUploads().then(function (previous) {
      // Paused meanwhile: Resume begins a new upload.
      if (entry.upload !== upload || entry.state === "paused") return;
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  }

  function pause() {
    if (!current || !current.upload) return;
    current.upload.abort();
    current.state = "paused";
    show(current);
    pauseButton.textContent = text.resume;
  }

  function resume() {
    if (!current || !current.upload) return;
    if (["paused", "failed", "offline"].indexOf(current.state) < 0) return;
    pauseButton.textContent = text.pause;
    begin(current.item, current);
  }

  pauseButton.addEventListener("click", function () {
    if (!current) return;
    if (current.state === "paused" || current.state === "failed" || current.state === "offline") resume();
    else pause();
  });

  // A network that comes back resumes an upload that stopped for want of it.
  window.addEventListener("online", function () {
    if (current && current.state === "offline") resume();
  });

  function setSending(on) {
    sending = on;
    startButton.disabled = on;
    input.disabled = on;
    togetherButton.disabled = on;
    pauseButton.hidden = !on;
    pauseButton.textContent = text.pause;
    list.querySelectorAll("input.upload-pick, button.upload-split").forEach(function (node) {
      node.disabled = on;
    });
  }

  async function sendAll() {
    setSending(true);
    for (const item of items) {
      for (const entry of item.entries) {
        if (entry.state === "done" || entry.state === "present") continue;
        await send(item, entry);
      }
    }
    current = null;
    setSending(false);
    // What was sent stays listed with its outcome; joining files is for the next choice.
    togetherButton.hidden = true;
    list.querySelectorAll("input.upload-pick, button.upload-split").forEach(function (node) {
      node.hidden = true;
    });
    const entries = allEntries();
    const fresh = entries.filter(function (e) { return e.state === "done"; }).length;
    if (fresh === entries.length) {
      // Everything new arrived: the page shows the processing, as after the plain form.
      window.location.assign(window.location.pathname + "?uploaded=" + fresh);
      return;
    }
    if (fresh > 0) {
      const link = element("a", { href: window.location.pathname, text: text.follow });
      totalText.replaceChildren(document.createTextNode(totalText.textContent + " · "), link);
    }
    showUnfinished();
  }

  input.addEventListener("change", function () {
    if (!sending) choose(input.files);
  });

  // Files dropped anywhere on the upload section are chosen together, as if picked in the
  // dialogue: an .emi dropped with its .ser files is one acquisition. The picker then holds
  // them too, so the form (and its "required") sees what is queued.
  const dropZone = document.getElementById("upload");
  form.noValidate = true; // the submit handler says when nothing is chosen
  dropZone.addEventListener("dragover", function (event) {
    if (!event.dataTransfer || Array.from(event.dataTransfer.types).indexOf("Files") < 0) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = sending ? "none" : "copy";
    dropZone.classList.add("dropping");
  });
  dropZone.addEventListener("dragleave", function (event) {
    if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
  });
  dropZone.addEventListener("drop", function (event) {
    if (!event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    dropZone.classList.remove("dropping");
    if (sending) return;
    try {
      input.files = event.dataTransfer.files;
    } catch (error) {
      // Older browsers cannot set a picker's files; the queue below is what is sent anyway.
    }
    choose(event.dataTransfer.files);
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (sending) return;
    if (!items.length) {
      if (!input.files || !input.files.length) {
        totalText.textContent = text.choose;
        return;
      }
      choose(input.files);
    }
    sendAll();
  });

  // ------------------------------------------------------------ after a reload

  // Uploads of this dataset that a reload (or a closed tab) left unfinished, as the server
  // still has them: named with how far they got. Those it no longer has are forgotten.
  async function showUnfinished() {
    const storage = window.tus.defaultOptions.urlStorage;
    let stored = [];
    try {
      stored = await storage.findAllUploads();
    } catch (error) {
      return;
    }
    const lines = [];
    for (const upload of stored) {
      if (!upload.metadata || upload.metadata.dataset_id !== config.datasetId) continue;
      let response;
      try {
        response = await fetch(upload.uploadUrl, {
          method: "HEAD",
          credentials: "same-origin",
          headers: { "Tus-Resumable": "1.0.0", "X-CSRF-Token": config.csrf || "" },
        });
      } catch (error) {
        continue; // no answer now: keep it for the next visit
      }
      const offset = Number(response.headers.get("Upload-Offset"));
      const length = Number(response.headers.get("Upload-Length"));
      if (response.status === 404 || response.status === 410 || (response.ok && offset === length)) {
        storage.removeUpload(upload.urlStorageKey);
        continue;
      }
      if (!response.ok) continue;
      const share = length ? Math.floor((100 * offset) / length) : 0;
      lines.push(upload.metadata.filename + " (" + share + " %)");
    }
    unfinished.hidden = lines.length === 0;
    unfinished.textContent = lines.length ? text.unfinished + " " + lines.join(", ") : "";
  }

  if (input.files && input.files.length) choose(input.files); // a form restored by the browser
  showUnfinished();
})();
