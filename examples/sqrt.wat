;; sqrt: element i is the square root of x = start + i, the same bits as
;; farm's built-in `sqrt`. It exports only `f`: farm appends the loop that
;; calls it for a whole leaf of elements.
(module
  (func (export "f") (param $x i64) (result f64)
    ;; x arrives as the u64 bit pattern in an i64, so x >= 2^63 reads as
    ;; negative: only those need the unsigned convert. For x < 2^63 the
    ;; signed convert gives the same value and is one instruction, where
    ;; Cranelift lowers f64.convert_i64_u to a much slower sequence.
    (if (result f64) (i64.ge_s (local.get $x) (i64.const 0))
      (then (f64.sqrt (f64.convert_i64_s (local.get $x))))
      (else (f64.sqrt (f64.convert_i64_u (local.get $x)))))))
