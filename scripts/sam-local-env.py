"""What `sam local invoke --env-vars FILE` gives each function of template.yaml, resolved by
the SAM CLI's own code (template, Globals, parameter defaults, then FILE), without Docker.

Run it with the aws-sam-cli virtualenv's Python (scripts/sam-tools installs it):

    ~/.cache/settle/sam-venv/bin/python scripts/sam-local-env.py env.json [template.yaml]

Prints the resolved environment of each function FILE names, as JSON keyed by logical id.
Fails, naming them, if FILE names a function the template does not have or sets a variable
SAM would not pass on: SAM overrides only the variables a function declares in the
template, and drops the others without a word.
"""

import json
import sys

from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    env_file, template = argv[1], argv[2] if len(argv) == 3 else "template.yaml"
    with open(env_file, encoding="utf-8") as f:
        overrides = json.load(f)
    stacks, _ = SamLocalStackProvider.get_stacks(template)
    functions = SamFunctionProvider(stacks, ignore_code_extraction_warnings=True)
    runner = LocalLambdaRunner(
        local_runtime=None, function_provider=functions, cwd=".", real_path=".", env_vars_values=overrides
    )
    resolved, problems = {}, []
    for logical_id, wanted in overrides.items():
        if logical_id == "Parameters":
            continue
        function = functions.get(logical_id)
        if function is None:
            problems.append(f"{logical_id}: no such function in {template}")
            continue
        # The method `sam local invoke` itself builds a container's environment with.
        env = runner._make_env_vars(function).resolve()
        for name, value in wanted.items():
            if name not in env:
                problems.append(f"{logical_id}: {name} is not declared in {template}, so SAM drops it")
            elif env[name] != str(value):
                problems.append(f"{logical_id}: {name} resolves to another value than the file's")
        resolved[logical_id] = env
    if problems:
        sys.exit("sam-local-env: " + "; ".join(problems))
    json.dump(resolved, sys.stdout, indent=2, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv)
