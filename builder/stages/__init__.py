"""The stages of a build: one module each, all with one contract, ordered by builder.pipeline.

Every stage module declares

    NAME         its directory under the artifact (and its name in the manifest)
    VERB         the step it belongs to (`trtq build --until` takes these)
    AFTER        the stages whose output it reads (their fingerprints are part of its own)
    LIBRARIES    the distributions whose versions its output depends on
    DELIVERABLE  whether its files are part of the published artifact (listed in the manifest)
    wanted(recipe) -> bool            whether this recipe needs it at all
    reads(recipe, ctx) -> dict        exactly the inputs its fingerprint covers (recipe fields, model facts)
    run(ctx) -> dict | None           do the work into ctx.out; the result goes into the stage's stamp
    intact(stage_dir) -> bool         (optional) a completed output is still usable

and runs with a builder.context.StageContext. Stages never import each other: what two stages share lives in a
room (builder/model, quant, checkpoint, planning, verify). Heavy libraries are imported inside `run`.
"""
