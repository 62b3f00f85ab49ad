rule resolved_config:
    output:
        f"{RESULTS}/config.resolved.yaml",
    params:
        resolved=lambda wildcards: as_json(report_config()),
    log:
        f"logs/{RUN}/resolved_config.log",
    localrule: True
    run:
        from clip_backdoor.config.output import write_resolved

        write_resolved(output[0], config)
