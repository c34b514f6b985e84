import subprocess
import sys


def test_the_api_exposes_the_three_commands_and_importing_labelfix_loads_no_torch():
    import labelfix.api as api

    assert callable(api.repair) and callable(api.train_bank) and callable(api.bench) and callable(api.load_bank)
    code = "import labelfix, labelfix.cli, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # `labelfix --help` does not pay for torch
