// A <select data-autosubmit> submits its form when it changes (no inline handlers: the CSP allows none).
document.addEventListener("change", (event) => {
  const field = event.target;
  if (field instanceof HTMLElement && field.matches("[data-autosubmit]") && field.form) {
    field.form.submit();
  }
});
