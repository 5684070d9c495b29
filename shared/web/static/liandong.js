/* Liandong: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";
  var W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  var CHECK = "10X98765432";

  function idError(v) {
    v = v.trim().toUpperCase();
    // The same words as the server (shared/rules/idcard.py), so a message never changes on submit.
    if (!v) return "请填写身份证号";
    if (v.length !== 18) return "身份证号应为18位";
    if (!/^\d{17}[\dX]$/.test(v)) return "身份证号前17位应为数字，最后一位为数字或X";
    var sum = 0;
    for (var i = 0; i < 17; i++) sum += parseInt(v.charAt(i), 10) * W[i];
    if (CHECK.charAt(sum % 11) !== v.charAt(17)) return "身份证号校验位错误";
    return "";
  }
  function phoneError(v) {
    v = v.replace(/\s+/g, "").replace(/^(\+86|86)(?=1\d{10}$)/, "");
    if (!v) return "请填写联系电话";
    if (!/^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$/.test(v)) return "联系电话格式不正确，应为11位手机号或带区号的固定电话";
    return "";
  }
  var CHECKS = { id_number: idError, phone: phoneError };

  function validate(input) {
    var fn = CHECKS[input.getAttribute("data-check")];
    var box = document.getElementById("err-" + input.name);
    if (!fn || !box) return;
    if (!input.value && !input.required) { box.textContent = ""; input.removeAttribute("aria-invalid"); return; }
    var msg = fn(input.value);
    box.textContent = msg;
    if (msg) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-check]"), function (input) {
      input.addEventListener("blur", function () { validate(input); });
      input.addEventListener("input", function () {
        var need = input.getAttribute("data-check") === "id_number" ? 18 : 11;
        if (input.value.trim().length >= need || input.getAttribute("aria-invalid")) validate(input);
      });
    });
    // A slow form (立即同步): say it is working and stop a second click until the page answers.
    Array.prototype.forEach.call(document.querySelectorAll("form[data-busy]"), function (f) {
      f.addEventListener("submit", function () {
        var note = f.querySelector(".busy-note");
        if (note) note.textContent = f.getAttribute("data-busy");
        Array.prototype.forEach.call(f.querySelectorAll("button"), function (b) { b.disabled = true; });
      });
    });
    // 打印 links open the print view without JavaScript; with it, they print this page directly.
    Array.prototype.forEach.call(document.querySelectorAll("[data-print]"), function (b) {
      b.addEventListener("click", function (e) {
        if (typeof window.print !== "function") return;
        e.preventDefault();
        window.print();
      });
    });
  });
})();
