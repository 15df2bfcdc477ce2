"""The parts of a pipeline run, one job per module; `kerasbnn.pipeline` puts them together
(and re-exports the names users call).

- `kerasbnn.run.arms`: which methods a run trains side by side (`arms`) and which teachers
  they need (`teacher_bits`).
"""
