"""The Python tutorial's experiment ("The class Pool"): math.sqrt over
range(10, N), once with Pool().map and once in a serial loop. Prints the
two times, measured with perf_counter as the tutorial does, as JSON."""
import json
import math
import sys
import time
from multiprocessing import Pool


def cube(x):
    return math.sqrt(x)


if __name__ == "__main__":
    N = int(sys.argv[1])
    start_time = time.perf_counter()
    with Pool() as pool:
        result = pool.map(cube, range(10, N))
    pool_s = time.perf_counter() - start_time
    start_time = time.perf_counter()
    result = []
    for x in range(10, N):
        result.append(cube(x))
    serial_s = time.perf_counter() - start_time
    print(json.dumps({"pool_s": pool_s, "serial_s": serial_s}))
