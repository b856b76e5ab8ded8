"""Running the pipeline on AWS: EMR clusters driven by Step Functions or by one API call.

The pieces, each in its own module:

  layout         where every deployed file lives below ``<artifacts>/<version>/`` and the wheelhouse
  wheelhouse     the node environment as content-addressed wheels of the pinned set (no PyPI on nodes)
  package        build the wheel, the node sets and collect what the cluster needs into a dist folder
  deploy         upload that folder and its wheels (``captioner deploy``)
  steps          spark-submit argument lists generated from the jobs' own argparse parsers
  cluster        the EMR cluster definition (instance fleets, GPU scheduling, bootstrap)
  pipelines      what each state machine runs: inputs, defaults, steps, checks
  deployment     the stack's values a definition refers to (``${Name}`` substitutions)
  definition     a pipeline as Amazon States Language (input checks, output lease, cluster, steps)
  statemachines  the generator of emr/statemachines/*.asl.json and the template's copies
  asl            the expression language of Step Functions (JSONPath): writing and evaluating it
  plan           what a state machine would run for a given execution input
  launch         the same cluster and steps through ``run_job_flow`` (``captioner launch``)
  stack          the CloudFormation stack's outputs as defaults for deploy and launch
  awserrors      AWS errors as one line that says what to do

Nothing here imports Spark or TensorFlow, and nothing runs at import time.
"""
