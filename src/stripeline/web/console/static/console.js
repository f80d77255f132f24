// The console works without script; this only adds conveniences.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("[data-toggle-all]")) {
    button.addEventListener("click", () => {
      const section = button.closest("section");
      const all = section.querySelectorAll("details");
      const open = !Array.from(all).every((d) => d.open);
      for (const d of all) d.open = open;
    });
  }
});
