"""Studies built on the core: SMT vs BPTT over lengths (`compare`), memory size x steps (`compression`),
gradient and drift analyses (`analysis`), and memory-space geometry (`geometry`). Each writes JSON,
markdown and figures (`smtjax.plotting`) under an output directory; experiments/ holds their commands."""
