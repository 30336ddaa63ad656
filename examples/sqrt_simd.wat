;; sqrt_simd: the same values as sqrt.wat, computed two at a time with
;; SIMD128 in the module's own batch export:
;;
;;   fill(first: i64, count: i32, out: i32)
;;
;; writes f(first), f(first + 1), ... f(first + count - 1) as little-endian
;; f64 at byte offset `out` of the exported memory. farm grows the memory
;; by the pages the output needs when it instantiates the module and passes
;; an `out` past the module's own data, 16-byte aligned.
(module
  (memory (export "memory") 0)

  (func $f (export "f") (param $x i64) (result f64)
    (f64.sqrt (call $to_f64 (local.get $x))))

  ;; x as f64, as Rust's `x as f64` for a u64 (see sqrt.wat for why the
  ;; signed convert is used below 2^63).
  (func $to_f64 (param $x i64) (result f64)
    (if (result f64) (i64.ge_s (local.get $x) (i64.const 0))
      (then (f64.convert_i64_s (local.get $x)))
      (else (f64.convert_i64_u (local.get $x)))))

  (func (export "fill") (param $first i64) (param $count i32) (param $out i32)
    (local $pairs_end i32)
    (local.set $pairs_end
      (i32.add (local.get $out)
        (i32.shl (i32.and (local.get $count) (i32.const -2)) (i32.const 3))))
    (block $done
      (loop $pair
        (br_if $done (i32.ge_u (local.get $out) (local.get $pairs_end)))
        (v128.store (local.get $out)
          (f64x2.sqrt
            (f64x2.replace_lane 1
              (f64x2.splat
                (if (result f64) (i64.ge_s (local.get $first) (i64.const 0))
                  (then (f64.convert_i64_s (local.get $first)))
                  (else (f64.convert_i64_u (local.get $first)))))
              (call $to_f64 (i64.add (local.get $first) (i64.const 1))))))
        (local.set $first (i64.add (local.get $first) (i64.const 2)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $pair)))
    ;; An odd count leaves one element.
    (if (i32.and (local.get $count) (i32.const 1))
      (then (f64.store (local.get $out) (call $f (local.get $first)))))))
