# Packer: seed the models while the image is built. The bundle was made beforehand with
#   ansible-playbook seed_models.yml -i <staging inventory> --tags staging
# and is uploaded into the image, then installed with local transport (no network, no hub).

build {
  sources = ["source.qemu.gpu-node"]

  provisioner "file" {
    source      = "/srv/modelseed/bundle/"
    destination = "/var/tmp/modelseed-bundle"
  }

  provisioner "ansible" {
    playbook_file = "seed_models.yml"  # or a copy of the collection's playbooks/seed_models.yml
    groups        = ["modelscope_nodes"]
    extra_arguments = [
      "--tags", "nodes",
      "-e", "@examples/golden-image/group_vars/all.yml",
      "-e", "modelseed_report_path=${path.root}/modelseed-report.json",
    ]
  }

  provisioner "shell" {
    inline = ["rm -rf /var/tmp/modelseed-bundle"]
  }
}
