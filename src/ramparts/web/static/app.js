// Shared by every page of the web app: times in the reader's own zone.
"use strict";

for (const element of document.querySelectorAll("time[datetime]")) {
  const moment = new Date(element.getAttribute("datetime"));
  if (!Number.isNaN(moment.getTime())) {
    element.title = element.textContent;
    element.textContent = moment.toLocaleString(undefined, {
      dateStyle: "medium", timeStyle: "short",
    });
  }
}
