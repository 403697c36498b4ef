// The new-campaign form: the categories list shows only the chosen prompt set's.
(() => {
  "use strict";
  const set = document.getElementById("id_prompt_set");
  const categories = document.getElementById("id_categories");

  function showChosenSet() {
    const chosen = set.selectedOptions[0]?.textContent.trim();
    for (const group of categories.querySelectorAll("optgroup")) {
      const mine = group.label === chosen;
      group.hidden = !mine;
      if (!mine) for (const option of group.querySelectorAll("option")) option.selected = false;
    }
  }
  set.addEventListener("change", showChosenSet);
  showChosenSet();
})();
