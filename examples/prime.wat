;; prime: element i is 1.0 if x = start + i is prime, else 0.0, by trial
;; division (2, then odd divisors up to the square root). A prime near 10^12
;; costs 500,000 divisions, an even number one.
(module
  (func (export "f") (param $x i64) (result f64)
    (local $d i64)
    (local $q i64)
    (if (i64.lt_u (local.get $x) (i64.const 4))
      (then (return (select (f64.const 1) (f64.const 0)
                      (i64.ge_u (local.get $x) (i64.const 2))))))
    (if (i64.eqz (i64.and (local.get $x) (i64.const 1)))
      (then (return (f64.const 0))))
    (local.set $d (i64.const 3))
    (loop $divisor
      (local.set $q (i64.div_u (local.get $x) (local.get $d)))
      ;; d > x / d: no divisor up to the square root, so x is prime.
      (if (i64.gt_u (local.get $d) (local.get $q))
        (then (return (f64.const 1))))
      (if (i64.eq (i64.mul (local.get $q) (local.get $d)) (local.get $x))
        (then (return (f64.const 0))))
      (local.set $d (i64.add (local.get $d) (i64.const 2)))
      (br $divisor))
    (unreachable)))
