// The review page's one script: collect the clinician's decisions, then sign them as JSON.
"use strict";
const changes = [];
function record(item, action, after) {
  const section = item.dataset.section, index = Number(item.dataset.index);
  changes.push({section, index, action, after: after || ""});
  if (action === "remove") item.classList.add("removed");
  if (action === "accept") item.classList.remove("removed");
  if (action === "edit") { item.querySelector(".text").textContent = after; item.classList.remove("removed"); }
  document.getElementById("status").textContent = changes.length + " change(s) to sign";
}
document.querySelectorAll(".sentence button").forEach((button) => {
  button.addEventListener("click", () => {
    const item = button.closest(".sentence");
    const action = button.dataset.action;
    if (action === "edit") {
      const text = window.prompt("Sentence", item.querySelector(".text").textContent);
      if (text !== null && text.trim()) record(item, "edit", text.trim());
    } else {
      record(item, action);
    }
  });
});
document.getElementById("sign").addEventListener("click", async () => {
  const status = document.getElementById("status");
  const reply = await fetch(window.location.pathname + "/sign", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({changes}),
  });
  if (!reply.ok) { status.textContent = "not signed: " + (await reply.text()); return; }
  const signed = await reply.json();
  status.textContent = "signed by " + signed.caller + " (version " + signed.version + ")";
  document.getElementById("report-status").textContent = "signed";
});
