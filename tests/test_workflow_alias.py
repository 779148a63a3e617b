"""``crln_monai.bundle``, the 0.1 name of ``crln_monai.workflow``, still serves the bundles exported by 0.1."""

from monai.bundle import ConfigParser

import crln_monai.bundle
import crln_monai.workflow


def test_the_old_names_are_the_workflow_objects():
    assert crln_monai.bundle.check_config is crln_monai.workflow.check_config
    assert crln_monai.bundle.check_outputs is crln_monai.workflow.check_outputs
    assert crln_monai.bundle.default_device is crln_monai.workflow.default_device
    assert set(crln_monai.bundle.__all__) == set(crln_monai.workflow.__all__)


def test_an_exported_config_resolves_the_old_references():
    """The references a 0.1 export's ``configs/inference.json`` holds, resolved by MONAI's config parser."""
    parser = ConfigParser(
        {
            "imports": ["$import crln_monai", "$import crln_monai.bundle"],
            "check": "$crln_monai.bundle.check_config",
            "outputs": "$crln_monai.bundle.check_outputs",
        }
    )
    assert parser.get_parsed_content("check") is crln_monai.workflow.check_config
    assert parser.get_parsed_content("outputs") is crln_monai.workflow.check_outputs
