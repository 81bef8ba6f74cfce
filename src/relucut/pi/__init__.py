"""Private-inference cost: a protocol cost model (estimate) and real 2PC measurement (SPU)."""
