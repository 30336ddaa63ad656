;; mandelbrot: element i is the escape count of the point of a 1024 x 1024
;; grid over [-2, 0.5] x [-1.25, 1.25] that x = start + i indexes (column
;; x mod 1024, row (x / 1024) mod 1024), at most 1000 iterations of
;; z = z^2 + c, as f64. Points inside the set cost 1000 iterations, points
;; far outside one.
(module
  (func (export "f") (param $x i64) (result f64)
    (local $cx f64) (local $cy f64)
    (local $zr f64) (local $zi f64)
    (local $zr2 f64) (local $zi2 f64)
    (local $n i32)
    ;; The step 2.5 / 1024 is a power-of-two fraction: exact.
    (local.set $cx
      (f64.add (f64.const -2)
        (f64.mul (f64.convert_i64_s (i64.and (local.get $x) (i64.const 1023)))
                 (f64.const 0.00244140625))))
    (local.set $cy
      (f64.add (f64.const -1.25)
        (f64.mul (f64.convert_i64_s
                   (i64.and (i64.shr_u (local.get $x) (i64.const 10)) (i64.const 1023)))
                 (f64.const 0.00244140625))))
    (block $escaped
      (loop $iterate
        (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
        (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
        (br_if $escaped (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
        (br_if $escaped (i32.ge_u (local.get $n) (i32.const 1000)))
        (local.set $zi
          (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                   (local.get $cy)))
        (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cx)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $iterate)))
    (f64.convert_i32_u (local.get $n))))
