// A <button data-copy="#selector"> copies that field's value to the clipboard (no inline handlers: the
// CSP allows none). Where the clipboard API is refused (plain http), the field is selected for Ctrl+C.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
  const field = button ? document.querySelector(button.dataset.copy) : null;
  if (!field) return;
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Press Ctrl+C to copy";
  }
});
