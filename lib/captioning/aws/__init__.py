"""Running the pipeline on AWS: EMR clusters driven by Step Functions or by one API call.

The pieces, each in its own module:

  layout         where every deployed file lives below ``<artifacts>/<version>/``
  package        build the wheel and collect what the cluster needs into a dist folder
  deploy         upload that folder to S3 (``captioner deploy``)
  steps          spark-submit argument lists generated from the jobs' own argparse parsers
  cluster        the EMR cluster definition (instance fleets, GPU scheduling, bootstrap)
  asl            the small expression language of Step Functions: quoting and evaluating it
  statemachines  the training and bulk-captioning state machines, and their generator
  plan           what a state machine would run for a given execution input
  launch         the same cluster and steps through ``run_job_flow`` (``captioner launch``)
  stack          the CloudFormation stack's outputs as defaults for deploy and launch

Nothing here imports Spark or TensorFlow, and nothing runs at import time.
"""
