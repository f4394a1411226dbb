"""The paper's tables and figures from the runs' metrics: Table I and the selection delta
(:mod:`.tables`), Tables II–V and the multi-task table (:mod:`.ablations`), Figures 4–6
(:mod:`.figures`) and the point-by-point comparison with the released code (:mod:`.fidelity`)."""
