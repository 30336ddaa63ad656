;; collatz: element i is the number of Collatz steps from x = start + i to
;; 1 (x -> x / 2 when even, x -> 3x + 1 when odd), as f64; 0 for x = 0 and
;; x = 1. Arithmetic wraps at 2^64. Costs vary a lot between neighbours:
;; 27 takes 111 steps, 32 takes 5.
(module
  (func (export "f") (param $x i64) (result f64)
    (local $steps i64)
    (block $done
      (loop $step
        (br_if $done (i64.le_u (local.get $x) (i64.const 1)))
        (local.set $x
          (if (result i64) (i64.eqz (i64.and (local.get $x) (i64.const 1)))
            (then (i64.shr_u (local.get $x) (i64.const 1)))
            (else (i64.add (i64.mul (local.get $x) (i64.const 3)) (i64.const 1)))))
        (local.set $steps (i64.add (local.get $steps) (i64.const 1)))
        (br $step)))
    (f64.convert_i64_s (local.get $steps))))
