"""The parts of a pipeline run, one job per module; `kerasbnn.pipeline` puts them together
(and re-exports the names users call).

- `kerasbnn.run.advice`: what to do after a NaN or a diverging loss (`nan_advice`);
- `kerasbnn.run.arms`: which methods a run trains side by side (`arms`) and which teachers
  they need (`teacher_bits`);
- `kerasbnn.run.checks`: everything checked before anything is written (`check_config`,
  `STUDENT_INITS`, `DELTA_INITS`);
- `kerasbnn.run.convert`: the LCE conversion, verification and latency of each model
  (`convert_and_benchmark`);
- `kerasbnn.run.layout`: where each file of the run directory lives, spelled here only
  (`kerasbnn.run_dir.RunDir` has one path method per kind; tests/run_layout_test.py checks
  that no other module spells one);
- `kerasbnn.run.data`: the run's splits (`RunData`, `run_data`) and seeds (`seed_everything`);
- `kerasbnn.run.report`: `report.md` and its plots, from the results only (`write_report`);
- `kerasbnn.run.teachers`: the run's networks (`build`), its one accuracy (`evaluate`) and its
  teachers, loaded, cached or trained (`train_teachers`).

No module here imports `kerasbnn.pipeline` or a method's module: the methods are found
through their registry (`kerasbnn.methods.METHODS`; tests/imports_test.py checks both).
"""
